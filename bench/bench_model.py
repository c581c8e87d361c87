"""AVSyncD model benchmark: side-by-side timings measured in one run.

CPU (always):
  * tiny-config train step (forward + backward + AdamW on the trainable modules), gradient checkpointing
    off / on, next to diffusers' UNetMotionModel (AnimateDiff) of the same widths and batch;
  * the FF temporal conv as implemented (three C x C products, W0 on frame 0 only) vs the literal
    ``Linear(3C->C)(cat[first, prev, cur])``;
  * FF spatial attention as implemented (keys/values of frame 0 projected once per clip) vs projecting
    keys/values for every frame and gathering frame 0's.
GPU (when CUDA is available): full-size model in bf16, frames/s per GPU for a train step and for
inference, next to UNetMotionModel with SD-1.5 widths and the default MotionAdapter; peak memory.

    python bench/bench_model.py [--iters 5] [--threads 1] [--json out.json]
    python bench/bench_model.py --smoke      # run the GPU section's code on CPU with the tiny config
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from asva_model.build import build_noise_scheduler, build_unet  # noqa: E402
from asva_model.config import ModelConfig  # noqa: E402
from asva_model.models.attention import FirstFrameAttnProcessor  # noqa: E402
from asva_model.models.resnet import FFInflatedConv  # noqa: E402
from asva_model.objective import diffusion_loss  # noqa: E402
from asva_platform.config import from_dict  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _timeit(fn, iters: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after one warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# Models under test


def model_config(model_size: str, **fields) -> ModelConfig:
    """``tiny``: configs/model/tiny.yaml's geometry; ``full``: the paper's (the defaults). Random init (no paths)."""
    if model_size == "full":
        return ModelConfig(**fields)
    path = CONFIGS / "model" / f"{model_size}.yaml"
    return dataclasses.replace(
        from_dict(ModelConfig, yaml.safe_load(path.read_text())["model"], str(path)), **fields
    )


def _ours(model_size: str, device, dtype, checkpointing: bool):
    unet = build_unet(model_config(model_size, gradient_checkpointing=checkpointing), device="cpu")
    return unet.to(device, dtype)


def _motion(model_size: str, device, dtype, checkpointing: bool):
    """diffusers' AnimateDiff UNet with the same 2D widths; only the motion modules train."""
    u = model_config(model_size).unet
    levels = len(u.block_out_channels)
    unet2d = UNet2DConditionModel(
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        attention_head_dim=u.attention_head_dim,
        cross_attention_dim=u.cross_attention_dim,
        norm_num_groups=u.norm_num_groups,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
    )
    adapter = MotionAdapter(
        block_out_channels=tuple(u.block_out_channels),
        motion_layers_per_block=u.layers_per_block,
        motion_num_attention_heads=8 if model_size == "full" else u.attention_head_dim,
        motion_norm_num_groups=u.norm_num_groups,
    )
    model = UNetMotionModel.from_unet2d(unet2d, adapter)
    model.freeze_unet2d_params()
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model.to(device, dtype)


def _batch(model_size: str, batch: int, frames: int, size: int, device, dtype):
    u = model_config(model_size)
    g = torch.Generator().manual_seed(0)
    return dict(
        latents=torch.randn(batch, 4, frames, size, size, generator=g).to(device, dtype),
        text=torch.randn(batch, 77, u.unet.cross_attention_dim, generator=g).to(device, dtype),
        audio=torch.randn(batch, 229, u.audio_encoder.embed_dim, generator=g).to(device, dtype),
        null=torch.randn(1, 229, u.audio_encoder.embed_dim, generator=g).to(device, dtype),
        mask=torch.ones(1, frames, 229, dtype=torch.bool, device=device),
    )


def _ours_step(unet, scheduler, b):
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss = diffusion_loss(unet, scheduler, b["latents"], b["audio"], b["null"], b["mask"], b["text"], 0.2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _motion_step(model, scheduler, b):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    frames = b["latents"].shape[2]
    text = b["text"].repeat_interleave(frames, 0)  # UNetMotionModel wants per-frame text

    def step():
        noise = torch.randn_like(b["latents"])
        t = torch.randint(0, 1000, (b["latents"].shape[0],), device=noise.device)
        noisy = scheduler.add_noise(b["latents"], noise, t)
        pred = model(noisy, t, text).sample
        F.mse_loss(pred[:, :, 1:].float(), noise[:, :, 1:].float()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


# ------------------------------------------------------------------------------------------------
# Sections


def bench_train_steps(model_size, device, dtype, batch, frames, size, iters) -> dict:
    scheduler = build_noise_scheduler(ModelConfig())
    b = _batch(model_size, batch, frames, size, device, dtype)
    out = {}
    for ckpt in (False, True):
        ours = _ours(model_size, device, dtype, ckpt).train()
        out[f"avsyncd_ckpt={ckpt}"] = _timeit(_ours_step(ours, scheduler, b), iters, device)
        del ours
        motion = _motion(model_size, device, dtype, ckpt).train()
        out[f"unet_motion_ckpt={ckpt}"] = _timeit(_motion_step(motion, scheduler, b), iters, device)
        del motion
    return out


def bench_inference(model_size, device, dtype, batch, frames, size, iters) -> dict:
    b = _batch(model_size, batch, frames, size, device, dtype)
    ours = _ours(model_size, device, dtype, False).eval()
    motion = _motion(model_size, device, dtype, False).eval()
    t = torch.full((batch,), 500, device=device)
    text = b["text"].repeat_interleave(frames, 0)
    with torch.no_grad():
        return {
            "avsyncd": _timeit(
                lambda: ours(b["latents"], t, b["text"], b["audio"], b["mask"]), iters, device
            ),
            "unet_motion": _timeit(lambda: motion(b["latents"], t, text), iters, device),
        }


def bench_ff_conv(iters, channels=64, batch=2, frames=12, size=16) -> dict:
    conv = FFInflatedConv(channels, channels, 3, padding=1)
    torch.nn.init.normal_(conv.conv_temp.weight, std=0.01)
    x = torch.randn(batch * frames, channels, size, size, requires_grad=True)

    def naive():
        y = (
            F.conv2d(x, conv.weight, conv.bias, padding=1)
            .unflatten(0, (batch, frames))
            .permute(0, 3, 4, 1, 2)
        )
        prev = torch.clamp(torch.arange(frames) - 1, min=0)
        cat = torch.cat([y[..., [0] * frames, :], y[..., prev, :], y], dim=-1)
        (y + conv.conv_temp(cat)).permute(0, 3, 4, 1, 2).sum().backward()

    def ours():
        conv(x, frames).sum().backward()

    cpu = torch.device("cpu")
    return {"ours": _timeit(ours, iters, cpu), "naive_concat_linear": _timeit(naive, iters, cpu)}


def bench_ff_attention(iters, dim=128, heads=8, batch=2, frames=12, tokens=256) -> dict:
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)
    x = torch.randn(batch * frames, tokens, dim)
    ours_proc = FirstFrameAttnProcessor()

    def naive():  # K/V for every frame, then every frame's keys replaced by frame 0's (the original)
        k = attn.to_k(x).unflatten(0, (batch, frames))[:, [0] * frames].flatten(0, 1)
        v = attn.to_v(x).unflatten(0, (batch, frames))[:, [0] * frames].flatten(0, 1)
        q = attn.to_q(x)
        h = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(h(q), h(k), h(v)).transpose(1, 2).flatten(2)
        return attn.to_out[0](o)

    cpu = torch.device("cpu")
    with torch.no_grad():
        return {
            "ours": _timeit(lambda: ours_proc(attn, x, num_frames=frames), iters, cpu),
            "naive_all_frames_kv": _timeit(naive, iters, cpu),
        }


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}x" if a > 0 else "n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument(
        "--smoke", action="store_true", help="run the GPU section on CPU with the tiny config"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    diffusers_logging.set_verbosity_error()  # silence per-cast "kept in float32" notices
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    print(
        f"== CPU ({torch.get_num_threads()} threads), tiny config, batch {args.batch} x {args.frames} frames, "
        f"8x8 latents: train step (fwd+bwd+AdamW), median of {args.iters}"
    )
    steps = bench_train_steps("tiny", cpu, torch.float32, args.batch, args.frames, 8, args.iters)
    results["cpu_tiny_train_step_s"] = steps
    for ck in (False, True):
        a, m = steps[f"avsyncd_ckpt={ck}"], steps[f"unet_motion_ckpt={ck}"]
        print(
            f"  grad ckpt {'on ' if ck else 'off'}: AVSyncD {a * 1e3:8.1f} ms | UNetMotionModel {m * 1e3:8.1f} ms"
            f" | AVSyncD/UNetMotion time {a / m:.2f}"
        )
    conv = bench_ff_conv(args.iters)
    attn = bench_ff_attention(args.iters)
    results["cpu_ff_conv_s"], results["cpu_ff_attention_s"] = conv, attn
    print(
        f"  FF temporal conv (C=64, 2x12 frames, 16x16, fwd+bwd): ours {conv['ours'] * 1e3:.2f} ms | "
        f"naive concat+Linear {conv['naive_concat_linear'] * 1e3:.2f} ms | speed-up "
        f"{_ratio(conv['ours'], conv['naive_concat_linear'])}"
    )
    print(
        f"  FF spatial attention (dim 128, 2x12 frames, 256 tokens, fwd): ours {attn['ours'] * 1e3:.2f} ms | "
        f"K/V for all frames {attn['naive_all_frames_kv'] * 1e3:.2f} ms | speed-up "
        f"{_ratio(attn['ours'], attn['naive_all_frames_kv'])}"
    )

    if torch.cuda.is_available() or args.smoke:
        device = torch.device("cuda") if torch.cuda.is_available() and not args.smoke else cpu
        model_size, size = ("tiny", 8) if args.smoke else ("full", 32)
        dtype = torch.bfloat16
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke)"
        print(
            f"== {name}: {model_size} model in bf16, batch {args.batch} x {args.frames} frames, {size}x{size} latents"
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train = bench_train_steps(model_size, device, dtype, args.batch, args.frames, size, args.iters)
        infer = bench_inference(model_size, device, dtype, args.batch, args.frames, size, args.iters)
        n = args.batch * args.frames
        fps = {
            k: n / v
            for k, v in {
                **{f"train_{k}": v for k, v in train.items()},
                **{f"infer_{k}": v for k, v in infer.items()},
            }.items()
        }
        results["gpu"] = {"device": name, "model": model_size, "frames_per_s": fps}
        for ck in (False, True):
            a, m = fps[f"train_avsyncd_ckpt={ck}"], fps[f"train_unet_motion_ckpt={ck}"]
            print(
                f"  train, grad ckpt {'on ' if ck else 'off'}: AVSyncD {a:8.1f} frames/s | UNetMotionModel "
                f"{m:8.1f} frames/s | ratio {a / m:.2f}"
            )
        a, m = fps["infer_avsyncd"], fps["infer_unet_motion"]
        print(
            f"  inference forward: AVSyncD {a:8.1f} frames/s | UNetMotionModel {m:8.1f} frames/s | ratio {a / m:.2f}"
        )
        if device.type == "cuda":
            results["gpu"]["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            print(f"  peak memory {results['gpu']['peak_memory_gib']:.1f} GiB")
    else:
        print("== GPU section skipped: CUDA is not available")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
