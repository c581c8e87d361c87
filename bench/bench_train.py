"""Training benchmark: the issue's four ratios, measured side by side in one run on the tiny model.

1. cached vs online training throughput (samples/s): TorchTrainer + DeepSpeed fits of the same config, one
   streaming the latent cache, the others decoding clips and running the frozen VAE + audio encoder in the
   loop: synchronously as the official code does (the headline ratio), and with our decode prefetching;
2. TorchTrainer + DeepSpeed step time vs a plain ``torch.distributed`` DDP loop (gloo, same model, batch,
   precision, AdamW + clipping, inputs already in memory, 1 torch thread per rank like a Ray worker), run
   right before and right after the cached fits and averaged; for ZeRO-0 (the like-for-like: replicated
   state and one gradient all-reduce, as DDP) and for the config's stage (ZeRO-2: reduce-scatter of the
   gradients, then an all-gather of the updated weights);
3. ZeRO-3 vs ZeRO-0 bytes per rank of parameters + optimizer state (fp32 masters + Adam moments), 2 ranks,
   measured after one optimizer step in bf16 (the GPU recipe's kind of precision; fp32 is printed too: there
   ZeRO-3 keeps an fp32 master partition besides the fp32 weight partition, so it saves less);
4. the data-wait fraction of the cached fit (time blocked on the next batch / wall time).

Beside ratio 1 it prints the compute-only online/cached ratio, (UNet training + frozen encoder FLOPs) /
UNet training FLOPs per clip, for this bench's model and for the full-size recipe (configs/avsync15.yaml):
the ratio caching reaches when decoding keeps up; more needs an online loop that waits on decoding.

Throughput and step time are means over the report windows after the first (which holds start-up).
Nothing is asserted; results go to stdout and bench/results/train.json.

``python -m bench train`` or ``python -m bench.bench_train [--steps N] [--image-size S] ...``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

from asva_model.build import build_noise_scheduler, build_unet
from asva_model.objective import loss_from_inputs
from asva_platform.artifacts.cache import open_cache
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.experiment import load_experiment
from asva_platform.planning.flops import online_encoder_flops_per_sample, training_flops_per_sample
from asva_platform.preprocess.job import build_cache, prepare, run_sequential
from asva_platform.storage import Storage
from asva_platform.training.data import CachedSource, WorkerInfo, collate_training_batch
from asva_platform.training.deepspeed_setup import state_bytes
from asva_platform.training.job import run as run_training
from asva_platform.training.job import trainer_spec
from asva_platform.training.loop import LocalContext, WorkerTrainer
from asva_platform.training.spec import RunSpec
from bench.common import free_port, join_local_group, local_ray_defaults, work_dir, write_results

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24, help="optimizer steps per fit")
    p.add_argument("--log-every", type=int, default=4, help="report window (steps)")
    p.add_argument("--image-size", type=int, default=32, help="frame size (the tiny VAE halves it)")
    p.add_argument("--clips-per-class", type=int, default=2, help="synthetic clips per class (15 classes)")
    p.add_argument("--windows-per-clip", type=int, default=4, help="cached windows per clip")
    p.add_argument("--ddp-steps", type=int, default=12, help="measured DDP steps (after 3 warm-up steps)")
    p.add_argument("--bytes-precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    p.add_argument("--work-dir", default="", help="keep inputs here (default: a temp dir, removed)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Inputs


def prepare_inputs(args, work: Path) -> tuple[list[str], str]:
    """Synthetic data + tiny weights + their latent cache (local storage, sqlite MLflow)."""

    _, overrides = tiny_inputs(
        work, clips_per_class=args.clips_per_class, max_duration=4.0, image_size=args.image_size
    )
    overrides += [
        f"storage.root={work / 'store'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"preprocess.windows_per_clip={args.windows_per_clip}",
    ]
    cfg = load_experiment(REPO / "configs" / "tiny.yaml", overrides)
    prep = prepare(cfg, Storage.from_config(cfg.storage), log=lambda _: None)
    build_cache(prep, run_sequential, log=lambda _: None)
    return overrides + [f"train.cache={prep.cache_id}"], prep.cache_id


def fit(overrides: list[str], name: str, args) -> dict:
    """One fresh training run (a unique name: a reused one would resume); returns its window metrics."""
    from mlflow.tracking import MlflowClient

    cfg = load_experiment(
        REPO / "configs" / "tiny.yaml",
        [
            *overrides,
            f"name={name}-{time.strftime('%Y%m%d-%H%M%S')}",
            f"train.max_steps={args.steps}",
            f"train.log_every={args.log_every}",
            f"train.checkpoint_every={args.steps}",
            "train.validate_every=0",
            "train.export=false",
        ],
    )
    t0 = time.perf_counter()
    result = run_training(cfg, log_fn=lambda _: None)
    wall = time.perf_counter() - t0
    client = MlflowClient(tracking_uri=cfg.tracking.resolved_uri())
    hist = {
        k: [m.value for m in sorted(client.get_metric_history(result.run_id, k), key=lambda m: m.step)]
        for k in ("samples_per_s", "step_time_s", "data_wait_frac")
    }
    steady = {k: statistics.mean(v[1:] or v) for k, v in hist.items()}  # drop the start-up window
    return {**steady, "windows": hist, "wall_s": wall, "run_id": result.run_id}


# ---------------------------------------------------------------------------------------------
# Plain torch.distributed baselines (spawned processes, same model and inputs)


def _cached_source(cfg, rank: int, world: int, train_cfg=None):
    """The trainer spec and the cached-mode data source of the fits, and one collated batch of it (the same
    tensors a cached fit sees)."""
    import itertools

    import numpy as np
    import torch

    spec = trainer_spec(dataclasses.replace(cfg, train=train_cfg or cfg.train), RunSpec("", "", ""))
    handle = open_cache(Storage.from_config(cfg.storage), cfg.train.cache, cfg.storage.cache_root)
    rows = list(itertools.islice(handle.iter_rows("train"), cfg.train.batch_size_per_worker))
    batch = collate_training_batch(
        {k: np.stack([r[k] for r in rows]) for k in rows[0]},
        handle.text_encodings(),
        handle.null_audio_tokens(),
        np.random.default_rng(0),
    )
    info = WorkerInfo(rank, world, torch.device("cpu"))
    return spec, CachedSource(spec, handle, info), batch


def _worker(
    rank: int, world: int, port: int, overrides: list[str], what: str, steps: int, precision: str, out: str
) -> None:
    import torch
    import torch.distributed as dist

    join_local_group(rank, world, port)
    cfg = load_experiment(REPO / "configs" / "tiny.yaml", overrides)
    result: dict = {}
    if what == "ddp":  # the loop's loss on the loop's inputs, under plain DDP instead of DeepSpeed
        from torch.nn.parallel import DistributedDataParallel

        torch.manual_seed(cfg.train.seed)
        unet = build_unet(cfg.model)
        sched = build_noise_scheduler(cfg.model)
        _, source, batch = _cached_source(cfg, rank, world)
        model = DistributedDataParallel(unet)
        params = [p for p in unet.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        times = []
        for i in range(steps + 3):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(i)
            loss = loss_from_inputs(
                model, sched, source.to_inputs(batch, gen), cfg.model.audio_cond_drop_prob, gen
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        result["step_time_s"] = statistics.mean(times)
    else:  # "bytes": per-rank parameter + optimizer bytes for ZeRO-0 and ZeRO-3 after one step of the trainer
        for prec in dict.fromkeys([precision, "bf16", "fp32"]):
            for stage in (0, 3):
                t = dataclasses.replace(
                    cfg.train, zero_stage=stage, precision=prec, gradient_accumulation_steps=1
                )
                spec, source, batch = _cached_source(cfg, rank, world, t)
                trainer = WorkerTrainer(spec, LocalContext(), source)
                trainer.micro_step(batch)
                key = f"zero{stage}_bytes" + ("" if prec == precision else f"_{prec}")
                result[key] = state_bytes(trainer.engine)
                del trainer
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def spawn(overrides: list[str], what: str, args, work: Path) -> dict:
    import torch.multiprocessing as mp

    out = work / f"{what}.json"
    mp.spawn(
        _worker,
        args=(2, free_port(), overrides, what, args.ddp_steps, args.bytes_precision, str(out)),
        nprocs=2,
    )
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------


def compute_only_ratio(config: Path, overrides: list[str]) -> float:
    """(training + frozen encoder FLOPs) / training FLOPs per clip, counted on the meta device."""

    cfg = load_experiment(config, overrides)
    train = training_flops_per_sample(cfg.model, cfg.sampling).per_sample
    return (train + online_encoder_flops_per_sample(cfg.model, cfg.sampling)) / train


def show(what: str, result: dict) -> dict:
    """Print each side as soon as it is measured (a later failure does not hide it)."""
    print(f"{what}: " + json.dumps({k: v for k, v in result.items() if k != "windows"}), flush=True)
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    local_ray_defaults(own_tracking=True)
    work = work_dir(args.work_dir, "asva-bench-train-")
    try:
        import ray

        t0 = time.perf_counter()
        overrides, cache_id = prepare_inputs(args, work)
        print(f"inputs + cache {cache_id}: {time.perf_counter() - t0:.1f}s", flush=True)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        # DDP runs right before and right after the cached fit: on a shared machine load drifts, and the
        # ratio should not depend on which side ran in a quieter minute
        ddp_runs = [show("plain DDP (before)", spawn(overrides, "ddp", args, work))]
        cached = show("cached fit", fit(overrides, "bench-cached", args))
        cached_zero0 = show(
            "cached fit, ZeRO-0", fit([*overrides, "train.zero_stage=0"], "bench-cached-zero0", args)
        )
        ddp_runs.append(show("plain DDP (after)", spawn(overrides, "ddp", args, work)))
        ddp = {
            "step_time_s": statistics.mean(r["step_time_s"] for r in ddp_runs),
            "runs": [r["step_time_s"] for r in ddp_runs],
        }
        # online as the official code does it (decode in the loop, nothing ahead), then with our prefetching
        online = show(
            "online fit (synchronous decode)",
            fit([*overrides, "train.data_mode=online", "train.prefetch_batches=0"], "bench-online", args),
        )
        online_prefetch = show(
            "online fit (decode prefetch)",
            fit([*overrides, "train.data_mode=online"], "bench-online-prefetch", args),
        )
        ray.shutdown()
        sizes = show("ZeRO bytes", spawn(overrides, "bytes", args, work))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    flops_ratio = {
        "this_model": compute_only_ratio(REPO / "configs" / "tiny.yaml", overrides),
        "full_size": compute_only_ratio(REPO / "configs" / "avsync15.yaml", []),
    }
    ratios = {
        "cached_vs_online_samples_per_s": cached["samples_per_s"] / online["samples_per_s"],
        "cached_vs_online_prefetch_samples_per_s": cached["samples_per_s"] / online_prefetch["samples_per_s"],
        "trainer_deepspeed_vs_ddp_step_time": cached_zero0["step_time_s"] / ddp["step_time_s"],
        "trainer_deepspeed_zero2_vs_ddp_step_time": cached["step_time_s"] / ddp["step_time_s"],
        "zero3_vs_zero0_bytes_per_rank": sizes["zero3_bytes"] / sizes["zero0_bytes"],
        "cached_data_wait_fraction": cached["data_wait_frac"],
    }
    goals = {
        "cached_vs_online_samples_per_s": ">= 3",
        "cached_vs_online_prefetch_samples_per_s": "(ours)",
        "trainer_deepspeed_vs_ddp_step_time": "<= 1.10",
        "trainer_deepspeed_zero2_vs_ddp_step_time": "(info)",
        "zero3_vs_zero0_bytes_per_rank": "<= 0.55",
        "cached_data_wait_fraction": "<= 0.05",
    }
    print(f"\n{'':38s}{'value':>12s}  goal")
    print(f"{'cached samples/s':38s}{cached['samples_per_s']:12.2f}")
    print(f"{'online samples/s (synchronous decode)':38s}{online['samples_per_s']:12.2f}")
    print(f"{'online samples/s (decode prefetch)':38s}{online_prefetch['samples_per_s']:12.2f}")
    print(f"{'TorchTrainer+DeepSpeed ZeRO-0 step (s)':38s}{cached_zero0['step_time_s']:12.3f}")
    print(f"{'TorchTrainer+DeepSpeed ZeRO-2 step (s)':38s}{cached['step_time_s']:12.3f}")
    print(f"{'plain DDP step (s)':38s}{ddp['step_time_s']:12.3f}")
    print(f"{'ZeRO-0 bytes/rank':38s}{sizes['zero0_bytes']:12d}")
    print(f"{'ZeRO-3 bytes/rank':38s}{sizes['zero3_bytes']:12d}")
    other = "fp32" if args.bytes_precision == "bf16" else "bf16"
    print(
        f"{'ZeRO-3 / ZeRO-0 bytes in ' + other:38s}{sizes[f'zero3_bytes_{other}'] / sizes[f'zero0_bytes_{other}']:12.3f}"
    )
    print(f"{'compute-only online/cached, this model':38s}{flops_ratio['this_model']:12.3f}")
    print(f"{'compute-only online/cached, full size':38s}{flops_ratio['full_size']:12.3f}")
    for k, v in ratios.items():
        print(f"{k:38s}{v:12.3f}  {goals[k]}")
    write_results(
        "train",
        {
            "args": vars(args),
            "ratios": ratios,
            "goals": goals,
            "cached": cached,
            "online": online,
            "online_prefetch": online_prefetch,
            "ddp": ddp,
            "cached_zero0": cached_zero0,
            "bytes": sizes,
            "compute_only_online_vs_cached": flops_ratio,
        },
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
