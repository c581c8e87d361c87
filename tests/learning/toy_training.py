"""The learning tier's shared toy: synthetic windows of the four audio-driven classes, pooled pixels standing
in for the VAE, and a plain training loop around the real UNet, frozen audio encoder and objective
(tests/learning/conftest.py trains it once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asva_model.build import build_audio_encoder, build_noise_scheduler, build_unet
from asva_model.objective import LossInputs, diffusion_loss, other_clip_index
from asva_platform.dev.synth import class_indices, make_spec, render_window
from asva_platform.experiment import load_experiment

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["cap_gun_shooting", "dog_barking", "hammering", "striking_bowling"]
TRAIN_CLIPS, TRAIN_WINDOWS = (
    96,
    4,
)  # windows are cheap to draw (no codec); many clips keep the UNet from memorising
TEST_CLIPS, TEST_WINDOWS = 64, 2
STEPS, BATCH = 140, 16  # per-step cost is mostly fixed overhead at this size: a big batch is cheap


def _windows(exp, clip_seed: int, clips: int, per_clip: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(frames (n, 3, f, H, W), mel (n, 1, bins, T), clip ids): ``per_clip`` random windows per clip."""
    indices = class_indices(CLASSES)
    frames, mels, ids = [], [], []
    rng = np.random.default_rng(clip_seed)
    for i in range(clips):
        spec = make_spec(clip_seed, indices[i % len(indices)], i // len(indices), max_duration=4.0)
        for start in rng.uniform(0.0, spec.duration - exp.sampling.clip_duration, per_clip):
            f, _, mel = render_window(spec, float(start), exp.sampling)
            frames.append(f)
            mels.append(mel)
            ids.append(spec.name)
    return torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(mels)), ids


def pixel_latents(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in for the VAE (what this test isolates the UNet from): 4x4-pooled pixels, 8x8 for 32x32
    frames like the toy VAE's latents, RGB + grey as the 4 channels, standardised. Lossless for the motion of
    the synthetic objects, and free: a VAE that reconstructs costs minutes to train (docs/toy.md)."""
    x = torch.nn.functional.avg_pool3d(frames * 2 - 1, (1, 4, 4))
    x = torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)
    return (x - x.mean()) / x.std()


def make_toy():
    """(experiment, training inputs, held-out inputs, each held-out window's other-clip index)."""
    torch.manual_seed(0)
    exp = load_experiment(str(REPO / "configs" / "toy.yaml"))
    encoder = build_audio_encoder(exp.model)  # random-init, frozen: tokens still carry the timing

    def inputs(clip_seed: int, clips: int, per_clip: int) -> tuple[LossInputs, list[str]]:
        frames, mel, ids = _windows(exp, clip_seed, clips, per_clip)
        with torch.no_grad():
            tokens = encoder.encode(mel)
            null = encoder.encode(torch.zeros_like(mel[:1]))
        text = torch.zeros(len(ids), 77, exp.model.unet.cross_attention_dim)
        return LossInputs(
            pixel_latents(frames), tokens, null, encoder.segment_mask(frames.shape[2])[None], text
        ), ids

    train, _ = inputs(0, TRAIN_CLIPS, TRAIN_WINDOWS)
    held_out, ids = inputs(1, TEST_CLIPS, TEST_WINDOWS)
    return exp, train, held_out, other_clip_index(ids)


def train_unet(exp, data: LossInputs, drop_prob: float) -> torch.nn.Module:
    """The toy UNet of ``exp.model`` (its schedule and prediction type) trained STEPS steps of BATCH."""
    torch.manual_seed(0)
    unet = build_unet(exp.model).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    sched = build_noise_scheduler(exp.model)
    gen = torch.Generator().manual_seed(0)
    n = data.latents.shape[0]
    for _ in range(STEPS):
        idx = torch.randint(0, n, (BATCH,), generator=gen)
        loss = diffusion_loss(
            unet,
            sched,
            data.latents[idx],
            data.audio_tokens[idx],
            data.null_audio_tokens,
            data.audio_mask,
            data.text_emb[idx],
            drop_prob,
            gen,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return unet.eval()
