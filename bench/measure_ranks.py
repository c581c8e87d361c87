"""Measure what training ranks hold: the trainer of the training loop on synthetic batches, N ranks in local
processes (gloo), no Ray, no services. What `asva plan` is checked against (tests/unit/test_plan_measured.py).

Per rank: the engine's bytes at the optimizer step by kind (``deepspeed_setup.state_breakdown``), the
checkpoint bytes it wrote, and the peak RSS rise during the forward and backward of the middle one of three
micro-steps per optimizer step (after two steps, so the optimizer states exist; the first micro-step allocated
the gradients, this one adds into them and does not step) over the RSS just before it, less any gradient bytes
it allocated: the activations. glibc is told to serve every allocation above 128 KiB
with its own mapping (``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave RSS and the rise is real.

    python -m bench.measure_ranks --world 2 --set train.zero_stage=3 ...
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil

from bench.common import free_port, join_local_group

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


class PeakRss:
    """Samples this process's RSS every millisecond while active."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def rise(self) -> int:
        return self.peak - self.base


def _grad_bytes(module) -> int:
    return sum(p.grad.untyped_storage().nbytes() for p in module.parameters() if p.grad is not None)


def _rank(rank: int, world: int, port: int, config: str | None, overrides: list[str], out: str) -> None:
    import torch
    import torch.distributed as dist

    from asva_platform.dev.synthetic_batches import SyntheticSource
    from asva_platform.experiment import load_experiment
    from asva_platform.training.deepspeed_setup import at_optimizer_step
    from asva_platform.training.job import trainer_spec
    from asva_platform.training.loop import LocalContext, WorkerTrainer
    from asva_platform.training.spec import RunSpec

    join_local_group(rank, world, port)
    # three micro-steps per optimizer step: the measured one is the middle one, whose backward adds to gradients
    # the first one allocated and which does not step the optimizer
    experiment = load_experiment(
        config,
        [
            *overrides,
            f"train.num_workers={world}",
            "train.use_gpu=false",
            "train.gradient_accumulation_steps=3",
        ],
    )
    spec = trainer_spec(experiment, RunSpec("", "", ""))
    trainer = WorkerTrainer(spec, LocalContext(), SyntheticSource(spec, torch.device("cpu"), seed=1))
    batch = trainer.source.batch
    with at_optimizer_step(trainer.engine) as taken:
        for micro in (0, 1, 2, 0, 1, 2):  # two optimizer steps: the states exist from the first one on
            trainer.micro_step(batch, micro)
    trainer.micro_step(batch, 0)
    before = _grad_bytes(trainer.engine.module)
    with PeakRss() as rss:
        trainer.micro_step(batch, 1)
    grads = _grad_bytes(trainer.engine.module) - before
    with tempfile.TemporaryDirectory() as tmp:
        trainer.engine.save_checkpoint(tmp, tag="ds")
        dist.barrier()
        mine = [
            f
            for f in Path(tmp).rglob("*.pt")
            if f"rank_{rank}_" in f.name or (rank == 0 and "zero_pp" not in f.name)
        ]
        written = sum(f.stat().st_size for f in mine)
        dist.barrier()
    result = {
        "rank": rank,
        "at_step": asdict(taken[-1]),
        "checkpoint_bytes": written,
        "rss_rise": rss.rise,
        "backward_grad_bytes": grads,
        "activations_measured": rss.rise - grads,
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def measure(overrides: list[str], world: int, config: str | None = None) -> list[dict]:
    """Run ``world`` ranks of the trainer for the experiment of ``config`` (default: none, the defaults) and
    ``overrides``, and return each rank's measurements."""
    import torch.multiprocessing as mp

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    saved = {k: os.environ.get(k) for k in MALLOC_ENV}
    os.environ.update(MALLOC_ENV)  # read by each spawned rank's allocator at start
    try:
        with tempfile.TemporaryDirectory() as out:
            mp.spawn(_rank, args=(world, free_port(), config, overrides, out), nprocs=world)
            return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="measure_ranks", description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    for r in measure(args.overrides, args.world):
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
