"""The audio pathway learns (CI-sized): after a short training on strongly audio-driven synthetic clips, the
held-out denoising loss with each window's own audio is lower than with another clip's audio (paired,
significant). The control shows the test can fail: the same measurement on the same model with its audio
cross-attention cut (output projections zeroed) finds no gap at all, so the gap is the audio pathway's.

The UNet, frozen audio encoder and AVSyncD objective are the model's real code; decoding is bypassed
(windows come straight from the synthetic generator), the VAE is replaced by pooled pixels and the loop is
a plain PyTorch one: no service, but minutes of training (about 4 on two cores), hence the learning tier rather
than the unit tier. The whole recipe with its real VAE and jobs is measured by `python -m bench learn`
(docs/toy.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asva_model.build import build_audio_encoder, build_noise_scheduler, build_unet
from asva_model.objective import LossInputs, audio_loss_gap, diffusion_loss, other_clip_index
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


@pytest.fixture(scope="module")
def toy():
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


def _train(exp, data: LossInputs, drop_prob: float) -> torch.nn.Module:
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


@pytest.fixture(scope="module")
def trained(toy):
    exp, train, _, _ = toy
    return _train(exp, train, exp.model.audio_cond_drop_prob)


def _gap(exp, unet, held_out, other, draws: int = 3):
    return audio_loss_gap(unet, build_noise_scheduler(exp.model), held_out, other, seed=0, draws=draws)


def test_trained_model_denoises_better_with_its_own_audio(toy, trained):
    exp, _, held_out, other = toy
    gap = _gap(exp, trained, held_out, other)
    assert gap.num_windows == TEST_CLIPS * TEST_WINDOWS
    assert gap.loss_true < gap.loss_other_audio, gap
    assert gap.gap_t > 3.0, gap  # paired over 128 held-out windows: p < 0.005 two-sided
    assert gap.win_rate > 0.6, gap


def test_no_gap_when_the_audio_cross_attention_is_cut(toy, trained):
    exp, _, held_out, other = toy
    cut = {n: p for n, p in trained.named_parameters() if ".attn_audio.to_out." in n}
    assert cut, "the UNet has no audio cross-attention output projections"
    saved = {n: p.detach().clone() for n, p in cut.items()}
    with torch.no_grad():
        for p in cut.values():
            p.zero_()  # the audio cross-attention now adds nothing to the residual stream
    try:
        gap = _gap(exp, trained, held_out, other, draws=1)
    finally:
        with torch.no_grad():
            for n, p in cut.items():
                p.copy_(saved[n])
    assert gap.loss_true == pytest.approx(gap.loss_other_audio, abs=1e-7)
    assert gap.gap_t == 0.0
