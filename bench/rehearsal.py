"""The paper's recipe at its true size, through every job, on this machine (`make rehearsal`).

``configs/avsync15.yaml`` with only the frame size, the clips and the steps cut: the 1.17 B-parameter UNet (310 M
trainable), ImageBind-Huge's audio encoder, the SD-1.5 VAE and the metric networks at their real sizes,
random-init and written in their real on-disk formats. On the local stack (SeaweedFS S3, MLflow, Ray), as Ray
jobs:

1. preprocess the synthetic clips with the full VAE and audio encoder;
2. train on 2 workers, ZeRO-3, gradient checkpointing, bf16, checkpoint to S3; resume on 1 worker through
   the universal reshard and finish one more step; export the UNet (diffusers layout);
3. train on 2 workers with ZeRO-2, one checkpoint;
4. evaluate a few test clips with 2 PNDM steps through the full metric set; generate one mp4;
5. a two-trial guidance sweep (the weights-free Sync);
6. check `asva plan` against what was measured: the model states per rank the trainer reported (to the byte),
   the checkpoint bytes written (5%), and, in a separate local rank (bench/measure_ranks.py), the activation
   estimate against the RSS rise of a full-size micro-step (25%).

Figures per stage go to a table and to ``bench/results/rehearsal.json``: wall seconds and peak RSS of the
stage's processes, per-rank parameter / gradient / optimizer bytes, checkpoint bytes per rank and in total,
checkpoint save and upload seconds, the resume's download and load (reshard) seconds, seconds per step, export
size, evaluation seconds per clip. Never part of `make test`.

    python -m bench.rehearsal [--image-size 64] [--classes 2] [--clips-per-class 2] [--only train,evaluate]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "avsync15.yaml")
SWEEP = str(REPO / "sweeps" / "guidance_scale.yaml")
STAGES = (
    "inputs",
    "preprocess",
    "train_zero3",
    "resume",
    "train_zero2",
    "evaluate",
    "generate",
    "sweep",
    "plan",
)
GB = 1e9
RESULTS = REPO / "bench" / "results" / "rehearsal.json"


class ProcessPeaks:
    """Peak RSS of every process on the machine while active, sampled twice a second, by pid."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()

    def __enter__(self) -> ProcessPeaks:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
                try:
                    rss = p.info["memory_info"].rss
                    title = (p.info["cmdline"] or [p.info["name"] or ""])[0]
                except (psutil.Error, TypeError, AttributeError, IndexError):
                    continue
                if rss > self.peaks.get(p.info["pid"], (0, ""))[0]:
                    self.peaks[p.info["pid"]] = (rss, title[:60])
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 3) -> list[dict]:
        """The ``n`` largest peaks: ``{"process", "peak_rss_gb"}``."""
        best = sorted(self.peaks.values(), reverse=True)[:n]
        return [{"process": title, "peak_rss_gb": round(rss / GB, 2)} for rss, title in best]


@dataclasses.dataclass
class Settings:
    image_size: int
    classes: list[str]
    clips_per_class: int
    work: Path


def full_model_overrides(s: Settings) -> list[str]:
    """The cuts: frame size, classes; every network keeps its size."""
    return [
        f"sampling.image_size=[{s.image_size},{s.image_size}]",
        f"dataset.classes={json.dumps(s.classes)}",
    ]


def make_inputs(s: Settings, s3_root: str) -> list[str]:
    """Synthetic clips (uploaded to S3), full-size random-init weights and metric networks (local); returns the
    overrides that point the config at them. Reused when already there."""
    from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt
    from asva_model.metrics.networks.tiny import save_full_size_metric_networks
    from asva_model.pretrained import make_tiny_pretrained
    from asva_platform.dev.synth import synthesize
    from asva_platform.experiment import load_experiment
    from asva_platform.storage import Storage, join

    data = s.work / "data"
    synthesize(data, clips_per_class=s.clips_per_class, max_duration=3.0, classes=s.classes)
    storage = Storage(os.environ.get("AWS_ENDPOINT_URL", ""))
    if not storage.exists(join(s3_root, "train.txt")):
        storage.upload_dir(str(data), s3_root)
    weights = s.work / "weights"
    model = load_experiment(CONFIG, full_model_overrides(s)).model
    if not (weights / "model.yaml").is_file():
        print(f"writing full-size random-init weights under {weights} (SD-1.5 UNet + VAE, ImageBind audio)")
        make_tiny_pretrained(weights, model, prompts=tuple(default_prompt(c) for c in AVSYNC15_CLASSES))
    nets = s.work / "metric_nets"
    done = nets / "written.json"
    if not done.is_file():
        print(f"writing full-size metric networks under {nets} (Inception, ImageBind-Huge, sync classifier)")
        metrics = save_full_size_metric_networks(nets)
        done.write_text(json.dumps(dataclasses.asdict(metrics)))
    metrics = json.loads(done.read_text())
    return [
        f"dataset.root={s3_root}",
        *full_model_overrides(s),
        f"model.pretrained_sd={weights / 'sd'}",
        f"model.audio_encoder_weights={weights / 'imagebind_audio.pth'}",
        f"model.text_encodings={weights / 'text_encodings.pt'}",
        f"model.null_text_encoding={weights / 'null_text_encoding.pt'}",
        *[
            f"eval.metrics.{k}={json.dumps(v) if isinstance(v, list) else v}"
            for k, v in metrics.items()
            if k
            in (
                "inception_weights",
                "i3d_weights",
                "imagebind_weights",
                "imagebind_bpe",
                "imagebind_num_heads",
                "avsync_classifier",
                "batch_size",
            )
        ],
    ]


MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "MALLOC_TRIM_THRESHOLD_": "1048576",
    "MALLOC_ARENA_MAX": "2",
}
"""Allocations from 1 MiB on get their own mapping and go back to the OS when freed: two full-size ranks keep
only what they use."""


def cpu_run(name: str, workers: int, zero: int, steps: int, precision: str = "bf16") -> list[str]:
    """Training on this machine: CPU workers, one clip per micro-batch, a checkpoint at the end, uploaded before
    the step returns (so its seconds are measured). bf16 (CPU matmuls ~5x slower than fp32): in fp32 two
    full-size ZeRO-3 ranks and DeepSpeed's copy of the frozen slices while saving do not fit 24 GB."""
    return [
        f"name={name}",
        "cluster.num_cpus=4",
        f"train.num_workers={workers}",
        "train.use_gpu=false",
        f"train.precision={precision}",
        f"train.zero_stage={zero}",
        "train.batch_size_per_worker=1",
        "train.gradient_accumulation_steps=1",
        f"train.max_steps={steps}",
        f"train.checkpoint_every={steps}",
        "train.milestone_every=0",
        "train.validate_every=0",
        "train.log_every=1",
        "train.checkpoint_upload=sync",
        *CPU_ZERO,
    ]


# What makes two full-size ZeRO ranks fit 24 GB beside the stack: DeepSpeed's defaults keep up to 10^9 weights
# gathered from the forward to the backward pass (all of them, 4.7 GB in fp32, per rank) and reduce through
# 5 * 10^8-element buckets (2 GB in fp32).
CPU_ZERO = [
    "train.reduce_bucket_size=50000000",
    "train.zero3_max_live_parameters=100000000",
    "train.zero3_max_reuse_distance=0",
]
CPU_ZERO_SETTINGS = dict(reduce_bucket_size=50_000_000, max_live_parameters=100_000_000, max_reuse_distance=0)


def checkpoint_files(uri: str) -> dict[str, int]:
    """Bytes of every file of a checkpoint, by path relative to it."""
    from pyarrow import fs as pafs

    from asva_platform.storage import Storage

    filesystem, path = Storage(os.environ.get("AWS_ENDPOINT_URL", "")).filesystem(uri)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return {i.path[len(path) :].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}


def per_rank(files: dict[str, int], world: int) -> list[int]:
    """Checkpoint bytes each rank wrote: its ``*rank_<r>_*`` shards; rank 0 also the module and trainer state."""
    out = [0] * world
    for name, size in files.items():
        base = name.rsplit("/", 1)[-1]
        owner = next((r for r in range(world) if f"zero_pp_rank_{r}_" in base), 0)
        out[owner] += size
    return out


def mlflow_metrics(run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient().get_run(run_id).data.metrics)


def first_frame_and_audio(data: Path, out: Path) -> tuple[str, str, str]:
    """The first test clip's first frame (png) and audio (wav), and its class: the generate job's inputs."""
    import av
    import numpy as np
    import soundfile as sf
    from PIL import Image

    line = (data / "test.txt").read_text().split()[0]
    clip = next(data.glob(f"videos/{line}*"))
    out.mkdir(parents=True, exist_ok=True)
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(clip)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    Image.fromarray(frame).save(out / "first.png")
    sf.write(out / "sound.wav", np.concatenate(chunks, axis=-1).T.astype(np.float32), rate)
    return str(out / "first.png"), str(out / "sound.wav"), line.split("/")[0]


def train_figures(result: dict, world: int, zero: int, precision: str, model_cfg) -> dict:
    """A training job's figures, and `asva plan`'s for the same setting beside them."""
    from asva_platform.planning import memory, plan

    metrics = result.get("metrics", {})
    files = checkpoint_files(result["checkpoint_uri"])
    ranks = per_rank(files, world)
    inv = memory.unet_inventory(model_cfg)
    want = memory.model_states(inv, zero, precision, world, zero=memory.ZeroSettings(**CPU_ZERO_SETTINGS))
    logged = mlflow_metrics(result["run_id"])
    held = {
        k: int(metrics[f"rank_{k}_bytes"])
        for k in ("params", "grads", "optimizer", "buffers")
        if f"rank_{k}_bytes" in metrics
    }
    return {
        "run_id": result["run_id"],
        "checkpoint_uri": result["checkpoint_uri"],
        "world": world,
        "zero_stage": zero,
        "rank_bytes": held,
        "plan_rank_bytes": {
            "params": want.params,
            "grads": want.grads,
            "optimizer": want.optimizer,
            "buffers": want.buckets,
        },
        "rank_peak_rss_gb": metrics.get("rank_peak_rss_gb"),
        "step_time_s": metrics.get("step_time_s"),
        "checkpoint_bytes_per_rank": ranks,
        "checkpoint_bytes": sum(files.values()),
        "plan_checkpoint_bytes": plan.checkpoint_bytes(inv, zero, precision, world),
        "checkpoint_save_s": logged.get("checkpoint_save_s"),
        "checkpoint_upload_s": (logged["checkpoint_stall_s"] - logged["checkpoint_save_s"])
        if "checkpoint_save_s" in logged
        else None,
        "resume_download_s": metrics.get("resume_download_s"),
        "resume_load_s": metrics.get("resume_load_s"),
        "export_bytes": sum(checkpoint_files(result["export_uri"]).values())
        if result.get("export_uri")
        else None,
    }


def plan_check(overrides: list[str]) -> dict:
    """One local rank of the full-size trainer (bench/measure_ranks.py): the plan's activations against the RSS
    rise of a micro-step, and its model states against the engine's bytes."""
    from asva_model.build import build_audio_encoder
    from asva_platform.experiment import load_experiment
    from asva_platform.planning import memory
    from bench.measure_ranks import measure

    (rank,) = measure(overrides, 1, CONFIG)
    experiment = load_experiment(CONFIG, overrides)
    tokens = build_audio_encoder(
        memory.geometry_only(memory.config_key(experiment.model)), device="meta"
    ).num_tokens
    t = experiment.train
    estimate = memory.activations(experiment.model, experiment.sampling, 1, tokens).bytes(
        experiment.model.gradient_checkpointing, t.precision
    )
    want = memory.model_states(memory.unet_inventory(experiment.model), t.zero_stage, t.precision, 1)
    return {
        "rank_bytes": rank["at_step"],
        "plan_rank_bytes": {"params": want.params, "grads": want.grads, "optimizer": want.optimizer},
        "activations_measured": rank["activations_measured"],
        "rss_rise": rank["rss_rise"],
        "backward_grad_bytes": rank["backward_grad_bytes"],
        "plan_activations": estimate,
    }


def run(s: Settings, only: set[str]) -> dict:
    from asva_platform.dev.demo import run_stage
    from asva_platform.experiment import load_experiment

    figures: dict = {"settings": {**dataclasses.asdict(s), "work": str(s.work)}, "stages": {}}
    if only and RESULTS.is_file():  # some stages again: keep the others' figures
        figures["stages"] = json.loads(RESULTS.read_text()).get("stages", {})
    out = figures["stages"]
    bucket = os.environ.get("ASVA_BUCKET", "asva")
    s3_root = f"s3://{bucket}/datasets/rehearsal-{s.image_size}-{'-'.join(s.classes)}-{s.clips_per_class}"

    def stage(key: str, fn, figures_of=None):
        if only and key not in only:
            return None
        print(f"\n==> rehearsal: {key}", flush=True)
        t0 = time.monotonic()
        with ProcessPeaks() as peaks:
            result = fn()
        out[key] = {"seconds": round(time.monotonic() - t0, 1), "peak_rss": peaks.top()}
        if figures_of is not None:
            out[key].update(figures_of(result))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=1))
        return result

    inputs = stage("inputs", lambda: make_inputs(s, s3_root)) or make_inputs(s, s3_root)
    model = load_experiment(CONFIG, inputs).model
    pre = stage(
        "preprocess",
        lambda: run_stage(
            "preprocess",
            CONFIG,
            [*inputs, "name=rehearsal", "cluster.num_cpus=4", "preprocess.windows_per_clip=2"],
        ),
        lambda r: {"cache_id": r.get("cache_id"), "rows": r.get("rows")},
    )
    if pre is None:  # a later stage alone: the cache of an earlier run
        pre = run_stage(
            "preprocess",
            CONFIG,
            [*inputs, "name=rehearsal", "cluster.num_cpus=4", "preprocess.windows_per_clip=2"],
        )
    cache = [f"train.cache={pre['cache_id']}"]
    z3 = stage(
        "train_zero3",
        lambda: run_stage("train", CONFIG, [*inputs, *cache, *cpu_run("rehearsal-z3", 2, 3, 2)]),
        lambda r: train_figures(r, 2, 3, "bf16", model),
    )
    resumed = stage(
        "resume",
        lambda: run_stage("train", CONFIG, [*inputs, *cache, *cpu_run("rehearsal-z3", 1, 3, 3)]),
        lambda r: train_figures(r, 1, 3, "bf16", model),
    )
    stage(
        "train_zero2",
        lambda: run_stage("train", CONFIG, [*inputs, *cache, *cpu_run("rehearsal-z2", 2, 2, 1)]),
        lambda r: train_figures(r, 2, 2, "bf16", model),
    )
    # the resumed run's MLflow id; when only later stages run, its export (what evaluation loads either way)
    checkpoint = (resumed or z3 or {}).get("run_id") or f"s3://{bucket}/runs/rehearsal-z3/export/unet"
    clips = 2
    small = [*inputs, "cluster.num_cpus=4", f"eval.checkpoint={checkpoint}", "generate.num_inference_steps=2"]
    stage(
        "evaluate",
        lambda: run_stage(
            "evaluate", CONFIG, [*small, "name=rehearsal", f"eval.max_videos={clips}", "eval.parallel=false"]
        ),
        lambda r: {
            "metrics": r.get("metrics"),
            "num_clips": r.get("num_clips"),
            "seconds_per_clip": r["seconds"] / max(1, r.get("clips_generated") or r.get("num_clips") or 1),
        },
    )
    image, audio, label = first_frame_and_audio(s.work / "data", s.work / "generate")
    stage(
        "generate",
        lambda: run_stage(
            "generate",
            CONFIG,
            [*small, "name=rehearsal", "eval.parallel=false"],
            flags=(
                "--image",
                image,
                "--audio",
                audio,
                "--prompt",
                label,
                "--out",
                str(s.work / "generate" / "out.mp4"),
            ),
        ),
        lambda r: {
            "job_seconds": r.get("seconds"),
            "mp4_bytes": (s.work / "generate" / "out.mp4").stat().st_size,
        },
    )
    stage(
        "sweep",
        lambda: run_stage(
            "sweep",
            SWEEP,
            [
                f"checkpoint={checkpoint}",
                "name=rehearsal-guidance",
                "metric=Sync",
                "plot_metrics=[SyncLag_s]",
                "resources_per_trial={CPU: 1}",
                "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}}",
                *[f"base.{o}" for o in small],
                "base.eval.metrics.metrics=[sync]",
                f"base.eval.max_videos={clips}",
            ],
        ),
        lambda r: {"parent_run_id": r.get("parent_run_id"), "best": r.get("best")},
    )
    stage(
        "plan",
        lambda: plan_check([*inputs, *cpu_run("rehearsal-plan", 1, 0, 2, "fp32")]),
        lambda r: r,
    )
    return figures


def _s(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def show(figures: dict) -> str:
    """The table: one line per stage, then the plan's figures beside the measured ones."""
    stages = figures["stages"]
    lines = [f"{'stage':<14}{'seconds':>9}  peak RSS, GB (largest processes)"]
    for key, f in stages.items():
        peaks = ", ".join(f"{p['peak_rss_gb']:.1f}" for p in f.get("peak_rss", []))
        lines.append(f"{key:<14}{f['seconds']:>9.1f}  {peaks}")
    for key in ("train_zero3", "resume", "train_zero2"):
        f = stages.get(key)
        if not f:
            continue
        lines.append(
            f"\n{key}: ZeRO-{f['zero_stage']} on {f['world']} worker(s), {_s(f['step_time_s'])} s/step, "
            f"peak RSS of a rank {_s(f['rank_peak_rss_gb'])} GB"
        )
        for kind, have in f["rank_bytes"].items():
            lines.append(f"  {kind:<10} per rank {have:>15,d}   plan {f['plan_rank_bytes'][kind]:>15,d}")
        lines.append(
            f"  checkpoint {f['checkpoint_bytes']:,d} B (per rank {', '.join(f'{b:,d}' for b in f['checkpoint_bytes_per_rank'])}), "
            f"plan {f['plan_checkpoint_bytes']:,d}; save {_s(f['checkpoint_save_s'])} s, upload {_s(f['checkpoint_upload_s'])} s"
        )
        if f.get("resume_load_s") is not None:
            lines.append(
                f"  resume: download {_s(f['resume_download_s'])} s, load + reshard {_s(f['resume_load_s'])} s"
            )
        if f.get("export_bytes"):
            lines.append(f"  export {f['export_bytes'] / GB:.2f} GB")
    if "evaluate" in stages:
        e = stages["evaluate"]
        lines.append(
            f"\nevaluate: {e['num_clips']} clips, {e['seconds_per_clip']:.1f} s per clip (full metric set)"
        )
    if "plan" in stages:
        p = stages["plan"]
        lines.append(
            f"plan check (1 rank, ZeRO-0): model states {'equal' if all(p['rank_bytes'][k] == v for k, v in p['plan_rank_bytes'].items()) else 'DIFFER'}; "
            f"activations {p['plan_activations'] / 1e6:.0f} MB planned, {p['activations_measured'] / 1e6:.0f} MB measured"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rehearsal", description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--classes", default="dog_barking,hammering")
    p.add_argument("--clips-per-class", type=int, default=2)
    p.add_argument("--work", default=".asva/rehearsal")
    p.add_argument("--only", default="", help=f"comma-separated stages of {', '.join(STAGES)} (default: all)")
    args = p.parse_args(argv)
    settings = Settings(
        args.image_size, args.classes.split(","), args.clips_per_class, Path(args.work).resolve()
    )
    from asva_platform.dev import stack
    from asva_platform.dev.services import apply_env

    settings_env = stack.StackSettings.from_env()
    apply_env(os.environ, settings_env.client_env())
    os.chdir(REPO)
    os.environ.update(MALLOC_ENV)  # forwarded to the jobs' workers (asva_platform.cluster.FORWARDED_ENV)
    stack.up(settings_env)
    figures = run(settings, set(filter(None, args.only.split(","))))
    print(show(figures))
    print(f"figures: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
