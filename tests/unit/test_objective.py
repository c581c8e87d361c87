"""The training objective: frame-0 conditioning, loss masking, audio dropout, online == cached path."""

from __future__ import annotations

import pytest
import torch

from asva_model.build import build_audio_encoder, build_noise_scheduler, build_unet, build_vae
from asva_model.objective import (
    LossInputs,
    audio_keep_mask,
    audio_loss_gap,
    diffusion_loss,
    encode_frames,
    loss_from_inputs,
    other_clip_index,
    prepare_cached_batch,
    prepare_online_batch,
    sample_latents,
)
from asva_model.pretrained import make_tiny_pretrained
from asva_platform.dev.fixtures import tiny_model_config

F_ = 6


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = make_tiny_pretrained(tmp_path_factory.mktemp("tiny"), tiny_model_config())
    unet = build_unet(cfg)
    return cfg, unet, build_noise_scheduler(cfg), build_vae(cfg), build_audio_encoder(cfg)


class Recorder(torch.nn.Module):
    """Wraps the UNet: records its inputs and lets a test tamper with the prediction."""

    def __init__(self, unet, edit=None):
        super().__init__()
        self.unet, self.edit, self.calls = unet, edit, []

    def forward(self, sample, t, text, audio, mask):
        self.calls.append(dict(sample=sample.clone(), t=t.clone(), audio=audio.clone(), mask=mask))
        out = self.unet(sample, t, text, audio, mask)
        return self.edit(out) if self.edit else out


def _batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        latents=torch.randn(b, 4, F_, 8, 8, generator=g),
        audio_tokens=torch.randn(b, 229, 32, generator=g),
        null_audio_tokens=torch.randn(1, 229, 32, generator=g),
        audio_mask=torch.rand(1, F_, 229, generator=g) > 0.3,
        text_emb=torch.randn(b, 77, 32, generator=g),
    )


def _loss(model, scheduler, batch, drop=0.0, seed=1):
    return diffusion_loss(
        model, scheduler, **batch, drop_prob=drop, generator=torch.Generator().manual_seed(seed)
    )


def test_frame_zero_is_clean_and_excluded_from_the_loss(parts):
    _, unet, sched, _, _ = parts
    batch = _batch()
    rec = Recorder(unet)
    base = _loss(rec, sched, batch)
    call = rec.calls[0]
    assert torch.equal(call["sample"][:, :, 0], batch["latents"][:, :, 0])  # frame 0: the clean condition
    assert not torch.allclose(call["sample"][:, :, 1:], batch["latents"][:, :, 1:])  # others are noised
    assert call["t"].shape == (2,)  # one timestep per sample, shared by its frames

    def wreck_frame0(out):
        out = out.clone()
        out[:, :, 0] = 1e3
        return out

    def nudge_frame1(out):
        out = out.clone()
        out[:, :, 1] += 0.5
        return out

    assert torch.equal(_loss(Recorder(unet, wreck_frame0), sched, batch), base)
    assert _loss(Recorder(unet, nudge_frame1), sched, batch) != base
    assert base.dtype == torch.float32 and base.ndim == 0


def test_loss_is_mse_on_noise_of_frames_1_onwards(parts):
    _, _, sched, _, _ = parts

    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, sample, *args):
            return torch.zeros_like(sample)

    batch = _batch()
    loss = _loss(Zero(), sched, batch, seed=5)
    # zero prediction -> loss = mean(noise[:, :, 1:]^2); recompute the noise from the same generator stream
    g = torch.Generator().manual_seed(5)
    torch.rand((2,), generator=g)  # audio dropout draw
    torch.randint(0, 1000, (2,), generator=g)  # timesteps
    noise = torch.randn(batch["latents"].shape, generator=g)
    torch.testing.assert_close(loss, noise[:, :, 1:].square().mean())


def test_audio_dropout_rate_statistics():
    g = torch.Generator().manual_seed(0)
    keep = torch.cat([audio_keep_mask(1000, 0.2, g) for _ in range(20)])
    assert abs(1 - keep.float().mean().item() - 0.2) < 0.015  # 20k Bernoulli draws: sd 0.0028
    assert audio_keep_mask(100, 0.0, g).all() and not audio_keep_mask(100, 1.0, g).any()


def test_dropped_samples_get_null_audio_with_the_same_mask(parts):
    _, unet, sched, _, _ = parts
    batch = _batch(b=64)
    batch["latents"] = batch["latents"][:, :, :2, :2, :2].contiguous()  # keep it cheap: 64 samples
    rec = Recorder(lambda sample, *a: torch.zeros_like(sample))
    diffusion_loss(
        rec,
        sched,
        batch["latents"],
        batch["audio_tokens"],
        batch["null_audio_tokens"],
        batch["audio_mask"][:, :2],
        batch["text_emb"],
        0.2,
        torch.Generator().manual_seed(3),
    )
    seen = rec.calls[0]["audio"]
    is_null = (seen == batch["null_audio_tokens"]).all(dim=(1, 2))
    is_real = (seen == batch["audio_tokens"]).all(dim=(1, 2))
    assert (is_null ^ is_real).all()
    g = torch.Generator().manual_seed(3)
    assert torch.equal(~is_null, audio_keep_mask(64, 0.2, g))
    assert 0 < int(is_null.sum()) < 64
    assert torch.equal(rec.calls[0]["mask"], batch["audio_mask"][:, :2])


def test_drop_prob_one_equals_training_on_null_audio(parts):
    _, unet, sched, _, _ = parts
    batch = _batch()
    as_null = dict(batch, audio_tokens=batch["null_audio_tokens"].expand(2, -1, -1))
    assert torch.equal(_loss(unet, sched, batch, drop=1.0), _loss(unet, sched, as_null, drop=0.0))
    assert not torch.equal(_loss(unet, sched, batch, drop=0.0), _loss(unet, sched, as_null, drop=0.0))


def test_online_and_cached_paths_give_the_same_loss(parts):
    cfg, unet, sched, vae, enc = parts
    frames = torch.rand(2, 3, F_, 16, 16)
    mel = torch.randn(2, 1, 128, 204)
    text = torch.randn(2, 77, 32)
    online = prepare_online_batch(
        vae, enc, frames, mel, text, torch.Generator().manual_seed(0), audio_drop_path=False
    )
    # the cache stores the VAE's distribution and the tokens; sampling uses the same generator stream
    mean, std = encode_frames(vae, frames)
    cached = prepare_cached_batch(
        mean,
        std,
        enc.encode(mel),
        enc.null_audio_tokens(),
        enc.segment_mask(F_)[None],
        text,
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(online.latents, cached.latents)
    assert online.latents.shape == (2, 4, F_, 8, 8)
    a = loss_from_inputs(unet, sched, online, 0.2, torch.Generator().manual_seed(9))
    b = loss_from_inputs(unet, sched, cached, 0.2, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    # latents are the VAE sample scaled by 0.18215
    torch.testing.assert_close(sample_latents(mean, torch.zeros_like(std)), mean * 0.18215)


def test_a_train_step_updates_only_the_new_modules(parts):
    cfg, unet, sched, _, _ = parts
    unet.train()
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-3)
    loss = _loss(unet, sched, _batch(), drop=0.2)
    loss.backward()
    opt.step()
    changed = {n for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("_temp" in n or "_audio" in n for n in changed)
    assert any("conv_temp" in n for n in changed)


def test_loss_is_fp32_for_a_bf16_unet(parts):
    import copy

    _, unet, sched, _, _ = parts
    half = copy.deepcopy(unet).to(torch.bfloat16)
    loss = _loss(half, sched, _batch())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, _loss(unet, sched, _batch()), rtol=0.05, atol=0.0)


def test_per_sample_loss_averages_to_the_batch_loss(parts):
    _, unet, sched, _, _ = parts
    batch = _batch(b=3)
    per = _loss_ps(unet, sched, batch)
    assert per.shape == (3,)
    assert float(per.mean()) == pytest.approx(float(_loss(unet, sched, batch)), rel=1e-5)


def _loss_ps(model, scheduler, batch, seed=1):
    return diffusion_loss(
        model,
        scheduler,
        **batch,
        drop_prob=0.0,
        generator=torch.Generator().manual_seed(seed),
        per_sample=True,
    )


def test_other_clip_index_pairs_every_window_with_another_clip():
    ids = ["a", "a", "a", "b", "c", "c"]
    other = other_clip_index(ids).tolist()
    assert all(ids[o] != ids[i] for i, o in enumerate(other))
    assert other == [3, 3, 3, 4, 0, 1]  # a -> b, b -> c, c -> a (cyclic, j-th window to j mod n-th)
    assert other_clip_index(["a", "a"]) is None


def test_audio_loss_gap_sees_only_the_audio(parts):
    """Same noise and timesteps for the three audio variants: a model that ignores its audio has no gap, and
    one whose prediction is the audio itself is told apart with the right sign."""
    _, unet, sched, _, _ = parts
    b = _batch(b=6)
    inputs = LossInputs(
        b["latents"], b["audio_tokens"], b["null_audio_tokens"], b["audio_mask"], b["text_emb"]
    )
    other = other_clip_index(["x", "x", "y", "y", "z", "z"])
    deaf = Recorder(unet, edit=lambda out: out * 0)  # predicts 0 whatever the audio
    gap = audio_loss_gap(deaf, sched, inputs, other, draws=2)
    assert gap.loss_true == gap.loss_other_audio == gap.loss_null_audio and gap.gap_t == 0.0
    assert gap.num_windows == 6

    class Oracle(torch.nn.Module):
        """Knows the noise when given its own window's audio (and is wrong with anyone else's)."""

        def forward(self, sample, t, text, audio, mask):
            own = (audio - inputs.audio_tokens[: len(audio)]).abs().flatten(1).sum(1) == 0
            noise = (
                sample
                - sched.alphas_cumprod[t].sqrt()[:, None, None, None, None] * inputs.latents[: len(audio)]
            )
            noise = noise / (1 - sched.alphas_cumprod[t]).sqrt()[:, None, None, None, None]
            return torch.where(own[:, None, None, None, None], noise, torch.zeros_like(noise))

    gap = audio_loss_gap(Oracle(), sched, inputs, other, draws=2, batch_size=6)
    assert gap.loss_true < 1e-6 < gap.loss_other_audio and gap.win_rate == 1.0 and gap.gap_t > 5
    with pytest.raises(ValueError, match="other"):
        audio_loss_gap(deaf, sched, inputs, torch.arange(6))


def test_loss_inputs_concat_keeps_shared_parts_once():
    a, b = _batch(b=2, seed=0), _batch(b=3, seed=1)
    parts_ = [
        LossInputs(x["latents"], x["audio_tokens"], x["null_audio_tokens"], x["audio_mask"], x["text_emb"])
        for x in (a, b)
    ]
    joined = LossInputs.concat(parts_)
    assert joined.latents.shape[0] == joined.audio_tokens.shape[0] == joined.text_emb.shape[0] == 5
    assert joined.null_audio_tokens.shape[0] == 1 and joined.audio_mask.shape[0] == 1
    assert torch.equal(joined.latents[2:], b["latents"])
