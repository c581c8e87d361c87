"""Checkpoint benchmark: how long training stalls per checkpoint with asynchronous vs synchronous upload.

Two fresh training runs of the same config, side by side in one run, differing only in
``train.checkpoint_upload`` (``sync`` first, then ``async``): 2 workers, ZeRO-2, a checkpoint every
``--checkpoint-every`` steps, to a real S3-protocol server (the local stack's SeaweedFS on 127.0.0.1, with its
own key, data in the work directory). The UNet is the tiny one widened (``--channels``) so that a checkpoint is
large enough for its upload to matter (its size is printed).

The stall is what the training loop measures and logs as ``checkpoint_stall_s`` at each checkpoint step:
from the start of the local save until ``ray.train.report`` returns (the local save plus, when sync, every
rank's upload). The run's last checkpoint is left out of the means: after it the async run waits for its
uploads to finish anyway (a run with a single checkpoint has only that one). Printed: both mean stalls, their
ratio (async / sync; the goal is <= 0.1) and the wall time of each fit (the uploads still run in the async
fit, on the same 2 cores).
Nothing is asserted; results go to stdout and bench/results/checkpoint.json.

``python -m bench checkpoint`` or ``python -m bench.bench_checkpoint [--steps N] [--channels A,B] ...``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.dev.s3_server import start_s3_server
from asva_platform.dev.services import env_applied
from asva_platform.experiment import load_experiment
from asva_platform.preprocess.job import build_cache, prepare, run_sequential
from asva_platform.storage import Storage
from asva_platform.training.job import run as run_training
from bench.common import local_ray_defaults, work_dir, write_results

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
BUCKET = "bench-checkpoint"


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench_checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per fit")
    p.add_argument("--checkpoint-every", type=int, default=2, help="steps between checkpoints")
    p.add_argument("--channels", default="256,512", help="UNet block_out_channels (the checkpoint's size)")
    p.add_argument("--work-dir", default="", help="keep inputs here (default: a temp dir)")
    return p.parse_args(argv)


def prepare_inputs(work: Path, root: str) -> list[str]:
    """Synthetic clips, tiny frozen weights and their latent cache on S3; the overrides a fit needs."""
    _, overrides = tiny_inputs(work, clips_per_class=1, max_duration=3.0, image_size=16)
    overrides += [
        f"storage.root={root}",
        "preprocess.windows_per_clip=1",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
    ]
    cfg = load_experiment(TINY, overrides)
    prep = prepare(cfg, Storage.from_config(cfg.storage), log=lambda _: None)
    build_cache(prep, run_sequential, log=lambda _: None)
    return [*overrides, f"train.cache={prep.cache_id}"]


def fit(overrides: list[str], mode: str, steps: int, checkpoint_every: int, channels: str) -> dict:
    """One training run of the wide UNet (``channels``: its block_out_channels), ``mode`` its checkpoint upload;
    its checkpoint stalls (the mean leaves the last checkpoint out, unless it is the only one) and size."""
    from mlflow.tracking import MlflowClient

    cfg = load_experiment(
        TINY,
        [
            *overrides,
            f"name=ckpt-{mode}-{time.strftime('%Y%m%d-%H%M%S')}",
            f"train.checkpoint_upload={mode}",
            f"train.max_steps={steps}",
            f"train.checkpoint_every={checkpoint_every}",
            f"train.log_every={checkpoint_every}",
            "train.zero_stage=2",
            "train.validate_every=0",
            "train.export=false",
            f"train.keep_checkpoints={steps}",
            "model.unet.attention_head_dim=8",
            f"model.unet.block_out_channels=[{channels}]",
            "model.pretrained_sd=",
        ],
    )  # the wide UNet: random init
    t0 = time.perf_counter()
    result = run_training(cfg, log_fn=lambda _: None)
    wall = time.perf_counter() - t0
    client = MlflowClient(tracking_uri=cfg.tracking.resolved_uri())
    stalls = {m.step: m.value for m in client.get_metric_history(result.run_id, "checkpoint_stall_s")}
    storage = Storage.from_config(cfg.storage)
    fs, path = storage.filesystem(result.checkpoint_uri)
    from pyarrow.fs import FileSelector

    size = sum(f.size or 0 for f in fs.get_file_info(FileSelector(path, recursive=True)))
    before_last = [v for s, v in sorted(stalls.items()) if s < result.final_step] or list(stalls.values())
    return {
        "stalls_s": stalls,
        "mean_stall_s": statistics.mean(before_last),
        "wall_s": wall,
        "checkpoint_bytes": size,
        "final_step": result.final_step,
    }


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    local_ray_defaults(own_tracking=True)
    work = work_dir(args.work_dir, "asva-bench-ckpt-")
    s3 = start_s3_server(work / "s3", bucket=BUCKET, log_dir=work)
    try:
        with env_applied(s3.env):
            overrides = prepare_inputs(work, f"s3://{BUCKET}/root")
            sync = fit(overrides, "sync", args.steps, args.checkpoint_every, args.channels)
            print(
                f"sync : checkpoint {sync['checkpoint_bytes'] / 1e6:.0f} MB, stall {sync['mean_stall_s']:.2f} s "
                f"per checkpoint, fit {sync['wall_s']:.1f} s",
                flush=True,
            )
            asynchronous = fit(overrides, "async", args.steps, args.checkpoint_every, args.channels)
    finally:
        s3.stop()
    ratio = asynchronous["mean_stall_s"] / sync["mean_stall_s"]
    print(
        f"async: checkpoint {asynchronous['checkpoint_bytes'] / 1e6:.0f} MB, stall "
        f"{asynchronous['mean_stall_s']:.2f} s per checkpoint, fit {asynchronous['wall_s']:.1f} s"
    )
    print(
        f"stall per checkpoint async / sync: {ratio:.3f} (goal <= 0.1); "
        f"fit wall async / sync: {asynchronous['wall_s'] / sync['wall_s']:.2f}"
    )
    path = write_results(
        "checkpoint", {"sync": sync, "async": asynchronous, "stall_ratio": ratio, "args": vars(args)}
    )
    print(f"results: {path}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
