"""GPU check: the full-size AVSyncD recipe's speed on one GPU, in one command (``bash bench/gpu_check.sh``).

Sections (each guarded: a failing one prints its error, the others still run, the exit status is 1):

* ``train``: full-size AVSyncD training steps through Ray Train's ``TorchTrainer`` (one worker, one GPU,
  local Ray started here) with DeepSpeed ZeRO-2 in bf16, on synthetic cached-mode inputs of the paper's
  geometry (12 x 4 x 32 x 32 latents, 229 audio tokens, 77 text tokens; the recipe's micro-batch 4 and
  gradient accumulation 2): samples/s, model TFLOP/s, MFU against the GPU's bf16 peak
  (``asva_platform.planning.flops``), peak memory; gradient checkpointing off;
* ``train_grad_ckpt``: the same with gradient checkpointing (the paper's setting; its recompute is not
  counted in the FLOPs, so MFU stays model FLOPs utilisation);
* ``sampling``: one full-size 50-step PNDM sampling with audio CFG (``generate.audio_guidance_scale`` 4, the
  UNet in bf16), one clip, decode included; ``sampling_fp32``: the same in fp32 (what the evaluation stage
  runs today);
* ``online_data``: the online data path on GPU for a few synthetic AVSync15-like clips
  (``asva_platform.training.data.OnlineSource``: decode + sample a window on CPU, then the frozen VAE and
  audio encoder on the GPU): clips/s of each part.

Weights: full-size pretrained weights are not available here, so every network is random-init (same
shapes, same FLOPs: timings and memory hold; losses and videos mean nothing). Nothing touches S3 or MLflow.
Inputs of the training sections are already on the GPU (as after the loop's host-to-device copy); each
micro-step reads the loss back (``float(loss)``), as the training loop does.

``--tiny`` (alias ``--dry-run``): the same code paths on CPU with the tiny geometry (configs/tiny.yaml) and
a couple of steps; MFU and peak memory print "n/a (cpu)". ``--no-ray``: the training sections run the same
step function in this process (a one-rank process group, no TorchTrainer), for machines without Ray and
for the unit test. Figures go to stdout and to ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``bench/results/gpu_check.json`` (``gpu_check_tiny.json`` with ``--tiny``); ``--out`` overrides.

    bash bench/gpu_check.sh [--steps 20] [--warmup 5] [--set train.batch_size_per_worker=8 ...]
    python -m bench.gpu_check --tiny [--no-ray]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from asva_model.build import (
    build_audio_encoder,
    build_inference_scheduler,
    build_unet,
)
from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt
from asva_model.pipeline import AVSyncPipeline
from asva_platform.dev.ray_local import use_private_local_ray
from asva_platform.dev.synth import synthesize
from asva_platform.dev.synthetic_batches import SyntheticSource
from asva_platform.experiment import load_experiment
from asva_platform.inference.weights import load_frozen_encoders
from asva_platform.planning.flops import mfu, peak_flops, training_flops_per_sample
from asva_platform.training.job import trainer_spec
from asva_platform.training.loop import LocalContext, RayTrainContext, TrainContext, WorkerTrainer
from asva_platform.training.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
FULL_CONFIG = REPO / "configs" / "avsync15.yaml"
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
GIB = 2**30
NA_CPU = "n/a (cpu)"


# ---------------------------------------------------------------------------------------------
# Settings


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument(
        "--tiny",
        "--dry-run",
        dest="tiny",
        action="store_true",
        help="CPU, tiny geometry (configs/tiny.yaml), a couple of steps",
    )
    p.add_argument(
        "--no-ray",
        action="store_true",
        help="training sections in this process (same step function, no TorchTrainer)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        help="timed optimizer steps per training section (default 20; --tiny 2)",
    )
    p.add_argument(
        "--warmup", type=int, default=-1, help="untimed optimizer steps first (default 5; --tiny 1)"
    )
    p.add_argument(
        "--sample-steps",
        type=int,
        default=0,
        help="PNDM steps (default: generate.num_inference_steps, 50 in the full recipe; --tiny 2)",
    )
    p.add_argument(
        "--online-clips",
        type=int,
        default=0,
        help="synthetic clips through the online data path (default 12; --tiny 4)",
    )
    p.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra dotted config override, e.g. train.batch_size_per_worker=8 (repeatable)",
    )
    p.add_argument("--num-cpus", type=int, default=0, help="logical CPUs of the local Ray (default: all)")
    p.add_argument("--out", default="", help="JSON path (default: $OUT/gpu_check.json or bench/results/...)")
    p.add_argument(
        "--work-dir", default="", help="keep synthetic data and Ray results here (default: a temp dir)"
    )
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup >= 0 else (1 if args.tiny else 5)
    args.online_clips = args.online_clips or (4 if args.tiny else 12)
    if args.tiny and not args.sample_steps:
        args.sample_steps = 2
    return args


def base_overrides(args) -> list[str]:
    """One worker, ZeRO-2, bf16 on the GPU; then the user's ``--set`` overrides. ``--tiny``: the tiny recipe on
    CPU in fp32 (CPU bf16 matmuls are ~5x slower than fp32 here), 32x32 frames, batch 1 x 2 accumulation steps
    (the recipe's accumulation path)."""
    common = ["train.num_workers=1", "train.zero_stage=2", "train.validate_every=0"]
    if args.tiny:
        common += [
            "train.use_gpu=false",
            "train.precision=fp32",
            "sampling.image_size=[32, 32]",
            "train.batch_size_per_worker=1",
            "train.gradient_accumulation_steps=2",
        ]
    else:
        common += ["train.use_gpu=true", "train.precision=bf16"]
    return common + list(args.overrides)


def config_path(args) -> Path:
    return TINY_CONFIG if args.tiny else FULL_CONFIG


def compute_device(args) -> torch.device:
    if args.tiny:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available (use --tiny for the CPU dry run)")
    return torch.device("cuda", torch.cuda.current_device())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"peak_mem_gib": None, "peak_reserved_gib": None}
    return {
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
    }


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# ---------------------------------------------------------------------------------------------
# Training steps (run in a TorchTrainer worker, or in this process with --no-ray)


def train_steps(spec: dict[str, Any], device: torch.device, context: TrainContext) -> dict[str, Any]:
    """The training loop's own trainer (:class:`WorkerTrainer`: the UNet, its DeepSpeed engine, the loss) on a
    synthetic cached-mode batch: ``warmup`` + ``steps`` optimizer steps of :meth:`WorkerTrainer.micro_step`,
    and their timings."""
    t_setup = time.perf_counter()
    exp = load_experiment(spec["config"], spec["overrides"])
    t, m = exp.train, exp.model
    world = context.info.world
    _reset_memory(device)
    worker_spec = trainer_spec(exp, RunSpec("", "", ""))
    trainer = WorkerTrainer(worker_spec, context, SyntheticSource(worker_spec, device, t.seed))
    batch = trainer.source.batch
    ga = t.gradient_accumulation_steps
    losses: list[float] = []

    def step() -> None:
        for micro in range(ga):
            losses.append(trainer.micro_step(batch, micro))
        trainer.state.step = trainer.engine.global_steps

    trainer.engine.train()
    for _ in range(spec["warmup"]):
        step()
    _sync(device)
    setup_s = time.perf_counter() - t_setup
    times = []
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        s0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - s0)
    elapsed = time.perf_counter() - t0
    samples = spec["steps"] * ga * t.batch_size_per_worker * world
    module = trainer.engine.module
    out = {
        "device": _device_name(device),
        "world_size": world,
        "micro_batch": t.batch_size_per_worker,
        "grad_accum": ga,
        "samples_per_step": ga * t.batch_size_per_worker * world,
        "gradient_checkpointing": m.gradient_checkpointing,
        "zero_stage": t.zero_stage,
        "precision": t.precision,
        "warmup_steps": spec["warmup"],
        "timed_steps": spec["steps"],
        "setup_s": setup_s,
        "step_time_s": elapsed / spec["steps"],
        "step_time_median_s": statistics.median(times),
        "samples_per_s": samples / elapsed,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "params": sum(p.numel() for p in module.parameters()),
        **_peak_memory(device),
    }
    return out  # the engine is freed on return; the next section resets the memory counters


def train_worker(spec: dict[str, Any]) -> None:
    """TorchTrainer entry point: the timings of :func:`train_steps` on this worker's device, reported."""
    import ray.train.torch

    result = train_steps(spec, ray.train.torch.get_device(), RayTrainContext())
    # Train V2 keeps only the metrics reported with a checkpoint: a one-file checkpoint carries them
    with tempfile.TemporaryDirectory(prefix="asva-gpu-check-") as d:
        (Path(d) / "result.json").write_text(json.dumps(result))
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(d))


def fit_with_trainer(spec: dict[str, Any], args, work: Path, name: str) -> dict[str, Any]:
    """One TorchTrainer fit of :func:`train_worker` (one worker; a GPU unless --tiny); its reported metrics."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cpus = 1 if args.tiny else max(1, min(8, (os.cpu_count() or 2) - 2))
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=spec,
        scaling_config=ScalingConfig(
            num_workers=1,
            use_gpu=not args.tiny,
            resources_per_worker={"CPU": cpus, **({} if args.tiny else {"GPU": 1})},
        ),
        run_config=RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(work / "ray_results"),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("the TorchTrainer fit reported no result")
    with result.checkpoint.as_directory() as d:
        metrics = json.loads((Path(d) / "result.json").read_text())
    return {**metrics, "runner": "TorchTrainer (1 worker)"}


@contextlib.contextmanager
def one_rank_group(device: torch.device, work: Path):
    """A one-rank ``torch.distributed`` group over a file store (no TCP port), as DeepSpeed needs; the env it
    reads is set for the duration and restored afterwards."""
    import torch.distributed as dist

    env = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    store_path = work / f"pg-store-{os.getpid()}-{time.monotonic_ns()}"
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        store=dist.FileStore(str(store_path), 1),
        rank=0,
        world_size=1,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        store_path.unlink(missing_ok=True)


PROCESS_GROUP = contextlib.ExitStack()
"""--no-ray: one group for the whole run (DeepSpeed caches its groups per process, so a second group in the
same process would leave it holding the first one's); closed at the end of :func:`main`."""


def fit_in_process(spec: dict[str, Any], args, work: Path) -> dict[str, Any]:
    import torch.distributed as dist

    device = compute_device(args)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        PROCESS_GROUP.enter_context(one_rank_group(device, work))
    return {**train_steps(spec, device, LocalContext(device)), "runner": "in process (--no-ray)"}


def train_section(args, work: Path, grad_ckpt: bool) -> dict[str, Any]:
    overrides = [*base_overrides(args), f"model.gradient_checkpointing={'true' if grad_ckpt else 'false'}"]
    spec = {
        "config": str(config_path(args)),
        "overrides": overrides,
        "warmup": args.warmup,
        "steps": args.steps,
    }
    name = "gpu-check-train" + ("-ckpt" if grad_ckpt else "")
    result = fit_in_process(spec, args, work) if args.no_ray else fit_with_trainer(spec, args, work, name)
    exp = load_experiment(spec["config"], overrides)
    flops = training_flops_per_sample(exp.model, exp.sampling).per_sample  # model FLOPs (no recompute)
    per_device = result["samples_per_s"] / result["world_size"]
    result["flops_per_sample"] = flops
    result["tflops_per_s"] = flops * per_device / 1e12
    if args.tiny:
        result["peak_tflops"] = result["mfu"] = None
    else:
        peak = peak_flops(result["device"], exp.train.precision, exp.train.peak_tflops)
        result["peak_tflops"] = peak / 1e12 if peak else None
        result["mfu"] = mfu(flops, per_device, peak) if peak else None
    result["latent_geometry"] = _latent_geometry(exp)
    return result


def _latent_geometry(exp) -> str:
    m, s = exp.model, exp.sampling
    tokens = build_audio_encoder(m, device="meta").num_tokens
    h, w = (size // m.vae.downsample_factor for size in s.image_size)
    return f"{s.num_frames}x{m.unet.in_channels}x{h}x{w} latents, {tokens} audio tokens, 77 text tokens"


# ---------------------------------------------------------------------------------------------
# Sampling


def sampling_section(args, dtype: torch.dtype) -> dict[str, Any]:
    """One clip through AVSyncPipeline: PNDM, audio CFG at generate.audio_guidance_scale, decode included."""
    device = compute_device(args)
    exp = load_experiment(config_path(args), [*base_overrides(args), "model.gradient_checkpointing=false"])
    m, s, e = exp.model, exp.sampling, exp.generate
    steps = args.sample_steps or e.num_inference_steps
    dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}[dtype]
    _reset_memory(device)
    torch.manual_seed(0)
    with torch.device(device):
        unet = build_unet(m, device=device).eval().requires_grad_(False).to(dtype)
    vae, audio = load_frozen_encoders(m, device, dtype_name)
    pipe = AVSyncPipeline(unet, vae, audio, build_inference_scheduler(m))
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, *s.image_size, generator=g)
    mel = torch.randn(1, 1, *audio.mel_shape, generator=g)
    text = torch.randn(1, 77, m.unet.cross_attention_dim, generator=g)

    def run(n: int):
        return pipe(
            image,
            text,
            mel,
            num_frames=s.num_frames,
            num_inference_steps=n,
            audio_guidance_scale=e.audio_guidance_scale,
            text_guidance_scale=1.0,
            generator=torch.Generator().manual_seed(e.seed),
            sampler=e.sampler,
        )

    run(2)  # warm-up: kernels, allocator
    _sync(device)
    t0 = time.perf_counter()
    out = run(steps)
    _sync(device)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(out.frames).all():
        raise RuntimeError("sampling produced non-finite frames")
    branches = 2 if e.audio_guidance_scale != 1.0 else 1  # (text, null audio) and (text, audio) per step
    forward = training_flops_per_sample(m, s).forward  # UNet forward FLOPs of one clip
    unet_tflops = forward * branches * steps / seconds / 1e12
    result = {
        "device": _device_name(device),
        "dtype": dtype_name,
        "steps": steps,
        "audio_guidance_scale": e.audio_guidance_scale,
        "sampler": e.sampler,
        "unet_evals_per_step": branches,
        "frames": list(out.frames.shape),
        "seconds_per_clip": seconds,
        "steps_per_s": steps / seconds,
        "unet_tflops_per_s": unet_tflops,
        **_peak_memory(device),
    }
    return result


# ---------------------------------------------------------------------------------------------
# Online data path


def synthetic_dataset(work: Path, clips: int, exp) -> list[str]:
    """``clips`` synthetic AVSync15-like clips (one per class, cycling), all in the train split, and random
    text encodings of the UNet's width for every class prompt; the overrides that point ``exp`` at them."""
    per_class = max(1, math.ceil(clips / len(AVSYNC15_CLASSES)))
    classes = AVSYNC15_CLASSES[: min(clips, len(AVSYNC15_CLASSES))]
    data = work / "data"
    synthesize(data, clips_per_class=per_class, seed=0, max_duration=3.0, classes=classes)
    text = work / "text_encodings.pt"
    g = torch.Generator().manual_seed(0)
    torch.save(
        {
            default_prompt(c): torch.randn(77, exp.model.unet.cross_attention_dim, generator=g)
            for c in AVSYNC15_CLASSES
        },
        text,
    )
    return [f"dataset.root={data}", f"model.text_encodings={text}", f"storage.root={work / 'store'}"]


def online_data_section(args, work: Path) -> dict[str, Any]:
    """Decode + window sampling (CPU) and the frozen VAE + audio encoder (GPU) of ``OnlineSource``, timed
    apart, batch by batch (the first batch is a warm-up)."""
    # the online source imports Ray Data at module level; imported here so the other sections run without Ray
    from asva_platform.storage import Storage
    from asva_platform.training.data import OnlineSource, WorkerInfo

    device = compute_device(args)
    overrides = [*base_overrides(args), "train.prefetch_batches=0"]
    exp = load_experiment(config_path(args), overrides)
    batch_size = exp.train.batch_size_per_worker
    if args.online_clips < 2 * batch_size:
        raise ValueError(
            f"--online-clips {args.online_clips}: need >= 2 batches of {batch_size} (one is a warm-up)"
        )
    t0 = time.perf_counter()
    overrides += synthetic_dataset(work, args.online_clips, exp)
    synth_s = time.perf_counter() - t0
    exp = load_experiment(config_path(args), overrides)
    _reset_memory(device)
    source = OnlineSource(exp, Storage.from_config(exp.storage), WorkerInfo(0, 1, device), exp.model)
    decode, encode, sizes = [], [], []
    it = iter(source.train_batches(0))
    while True:
        d0 = time.perf_counter()
        batch = next(it, None)
        d1 = time.perf_counter()
        if batch is None:
            break
        inputs = source.to_inputs(batch, torch.Generator().manual_seed(len(sizes)))
        _sync(device)
        encode.append(time.perf_counter() - d1)
        decode.append(d1 - d0)
        sizes.append(batch["frames"].shape[0])
        if not (torch.isfinite(inputs.latents).all() and torch.isfinite(inputs.audio_tokens).all()):
            raise RuntimeError("online encoders produced non-finite latents or audio tokens")
    timed_clips = sum(sizes[1:])  # the first batch warms up
    decode_s, encode_s = sum(decode[1:]), sum(encode[1:])
    result = {
        "device": _device_name(device),
        "clips": timed_clips,
        "batch_size": batch_size,
        "latents_shape": list(inputs.latents.shape),
        "audio_tokens_shape": list(inputs.audio_tokens.shape),
        "decode_threads": max(1, int(exp.train.cpus_per_worker)),
        "decode_clips_per_s": timed_clips / decode_s,
        "encode_clips_per_s": timed_clips / encode_s,
        "clips_per_s": timed_clips / (decode_s + encode_s),
        "encoder_dtype": "fp32",
        "synth_s": synth_s,
        **_peak_memory(device),
    }
    source.pool.shutdown(wait=True)
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value, unit: str = "", digits: int = 2, cpu: bool = False) -> str:
    if value is None:
        return NA_CPU if cpu else "n/a"
    return f"{value:.{digits}f}{unit}"


def print_section(name: str, r: dict[str, Any], cpu: bool) -> None:
    if name.startswith("train"):
        print(
            f"  [{name}] {r['runner']}, {r['device']}, {r['latent_geometry']}, ZeRO-{r['zero_stage']} "
            f"{r['precision']}, grad ckpt {'on' if r['gradient_checkpointing'] else 'off'}, "
            f"{r['samples_per_step']} samples/step ({r['micro_batch']} x {r['grad_accum']} accumulation), "
            f"{r['timed_steps']} timed steps after {r['warmup_steps']}"
        )
        print(
            f"  [{name}] samples/s          {r['samples_per_s']:.2f}  (step {r['step_time_s'] * 1e3:.1f} ms, "
            f"median {r['step_time_median_s'] * 1e3:.1f} ms)"
        )
        print(
            f"  [{name}] achieved TFLOP/s   {r['tflops_per_s']:.3f}  ({r['flops_per_sample'] / 1e12:.3f} "
            f"TFLOP per sample)"
        )
        peak = f" of {r['peak_tflops']:.1f} TFLOP/s bf16 peak" if r.get("peak_tflops") else ""
        print(
            f"  [{name}] MFU                {_fmt(None if r['mfu'] is None else 100 * r['mfu'], '%', 1, cpu)}"
            f"{peak}"
        )
        print(
            f"  [{name}] peak memory        {_fmt(r['peak_mem_gib'], ' GiB', 2, cpu)}"
            + (f" (reserved {r['peak_reserved_gib']:.2f} GiB)" if r.get("peak_reserved_gib") else "")
        )
    elif name.startswith("sampling"):
        print(
            f"  [{name}] {r['device']}, {r['dtype']}, {r['steps']}-step PNDM ({r['sampler']}), audio CFG "
            f"{r['audio_guidance_scale']} ({r['unet_evals_per_step']} UNet passes/step), frames {r['frames']}"
        )
        print(
            f"  [{name}] seconds per clip    {r['seconds_per_clip']:.2f}  ({r['steps_per_s']:.2f} steps/s, "
            f"UNet {r['unet_tflops_per_s']:.2f} TFLOP/s)"
        )
        print(f"  [{name}] peak memory         {_fmt(r['peak_mem_gib'], ' GiB', 2, cpu)}")
    elif name == "online_data":
        print(
            f"  [{name}] {r['device']}, {r['clips']} clips timed (batches of {r['batch_size']}, after one "
            f"warm-up batch), latents {r['latents_shape']}, audio tokens {r['audio_tokens_shape']}"
        )
        print(
            f"  [{name}] decode clips/s       {r['decode_clips_per_s']:.2f}  (CPU, {r['decode_threads']} thread)"
        )
        print(
            f"  [{name}] VAE+audio clips/s    {r['encode_clips_per_s']:.2f}  (frozen encoders in "
            f"{r['encoder_dtype']})"
        )
        print(f"  [{name}] online clips/s       {r['clips_per_s']:.2f}  (decode then encode, no overlap)")
        print(f"  [{name}] peak memory          {_fmt(r['peak_mem_gib'], ' GiB', 2, cpu)}")


SECTIONS = ("train", "train_grad_ckpt", "sampling", "sampling_fp32", "online_data")


def output_path(args) -> Path:
    if args.out:
        return Path(args.out)
    name = "gpu_check_tiny.json" if args.tiny else "gpu_check.json"
    return Path(os.environ["OUT"]) / name if os.environ.get("OUT") else REPO / "bench" / "results" / name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # DeepSpeed picks its accelerator from this at import: a CPU default exported by the shell (Makefile,
    # test env) must not turn the GPU run into a CPU one, nor the reverse
    os.environ["DS_ACCELERATOR"] = "cpu" if args.tiny else "cuda"
    use_private_local_ray()  # on 127.0.0.1, with a token of its own
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    cpu = args.tiny
    wanted = [s for s in (args.only.split(",") if args.only else SECTIONS) if s]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if cpu and "sampling_fp32" in wanted and not args.only:
        wanted.remove("sampling_fp32")  # on CPU "sampling" is fp32 already
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="asva-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path = output_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "mode": "tiny (CPU dry run)" if cpu else "full size",
        "config": str(config_path(args).relative_to(REPO)),
        "overrides": base_overrides(args),
        "torch": torch.__version__,
        "device": "cpu"
        if cpu
        else (torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"),
        "weights": "random init (no pretrained weights; timings and memory only)",
        "trainer": "in process (--no-ray)" if args.no_ray else "TorchTrainer",
        "sections": {},
        "errors": {},
    }

    def save() -> None:  # after every section: a run killed later still leaves what it measured
        report["total_s"] = time.perf_counter() - started
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")

    print(
        f"GPU check: {report['mode']}, {report['device']}, torch {torch.__version__}, "
        f"{report['trainer']} for training; sections {', '.join(wanted)}",
        flush=True,
    )
    ray_started = False
    runners = {
        "train": lambda: train_section(args, work, grad_ckpt=False),
        "train_grad_ckpt": lambda: train_section(args, work, grad_ckpt=True),
        "sampling": lambda: sampling_section(args, torch.float32 if cpu else torch.bfloat16),
        "sampling_fp32": lambda: sampling_section(args, torch.float32),
        "online_data": lambda: online_data_section(args, work),
    }
    try:
        for i, name in enumerate(wanted):
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                if name.startswith("train") and not args.no_ray and not ray_started:
                    compute_device(args)  # no GPU: fail here, not in a Ray waiting for one
                    ray_started = start_ray(args)
                result = runners[name]()
                result["section_s"] = time.perf_counter() - t0
                report["sections"][name] = result
                print_section(name, result, cpu)
            except Exception as err:  # one failing section must not hide the others
                report["errors"][name] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
                print(f"  [{name}] FAILED: {type(err).__name__}: {err}", flush=True)
            print(f"-- {name}: {time.perf_counter() - t0:.1f}s", flush=True)
            if ray_started and not any(n.startswith("train") for n in wanted[i + 1 :]):
                import ray

                ray.shutdown()  # the other sections time this process alone
                ray_started = False
            save()
    finally:
        PROCESS_GROUP.close()
        if ray_started:
            import ray

            ray.shutdown()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    save()
    failed = sorted(report["errors"])
    print(f"\n== summary: {report['mode']}, {report['device']}, {report['weights']}")
    for name in wanted:
        if name in report["sections"]:
            print_section(name, report["sections"][name], cpu)
        else:
            print(f"  [{name}] FAILED: {report['errors'].get(name)}")
    print(
        f"GPU check: {len(report['sections'])} section(s) ok, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + f", {report['total_s']:.0f}s; results in {path}",
        flush=True,
    )
    return 1 if failed else 0


def start_ray(args) -> bool:
    """A local Ray for the TorchTrainer sections (one GPU unless --tiny); workers import this module from the repo."""
    import ray

    if ray.is_initialized():
        return False
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "PYTHONPATH": path,
        "DS_ACCELERATOR": os.environ["DS_ACCELERATOR"],
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"],
        "TOKENIZERS_PARALLELISM": "false",
    }
    num_cpus = args.num_cpus or (2 if args.tiny else (os.cpu_count() or 2))
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=0 if args.tiny else 1,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"env_vars": env},
    )
    return True


if __name__ == "__main__":
    sys.exit(main())
