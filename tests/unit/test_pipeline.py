"""AVSyncPipeline: determinism, fixed first frame, guidance algebra, mp4 output with muxed audio."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler

from asva_model.pipeline import AVSyncPipeline, guided_eps
from asva_model.pretrained import make_tiny_pretrained
from asva_model.text import load_null_text_encoding, load_text_encodings
from asva_model.video_io import write_video
from asva_platform.dev.fixtures import tiny_model_config

F_ = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = make_tiny_pretrained(tmp_path_factory.mktemp("tiny"), tiny_model_config())
    pipe = AVSyncPipeline.from_model_config(cfg)
    text = load_text_encodings(cfg.text_encodings, expected_dim=32).lookup(["dog barking"])
    null_text = load_null_text_encoding(cfg.null_text_encoding, expected_dim=32)
    g = torch.Generator().manual_seed(0)
    return (
        pipe,
        text,
        null_text,
        torch.rand(1, 3, 16, 16, generator=g),
        torch.randn(1, 1, 128, 204, generator=g),
    )


def _run(setup, seed=0, **kw):
    pipe, text, null_text, image, mel = setup
    kw.setdefault("num_inference_steps", 4)
    return pipe(
        image,
        text,
        mel,
        num_frames=F_,
        generator=torch.Generator().manual_seed(seed),
        null_text_emb=null_text,
        **kw,
    )


def test_seeded_runs_are_deterministic(setup):
    a, b = _run(setup, seed=3), _run(setup, seed=3)
    assert a.frames.shape == (1, F_, 3, 16, 16)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, _run(setup, seed=4).latents)
    assert 0.0 <= float(a.frames.min()) and float(a.frames.max()) <= 1.0


def test_first_frame_latent_never_changes(setup):
    pipe, _, _, image, _ = setup
    out = _run(setup, seed=5)
    expected = pipe.encode_image(image, torch.Generator().manual_seed(5))  # first draw of the same stream
    assert torch.equal(out.latents[:, :, 0], expected)
    assert not torch.allclose(out.latents[:, :, 1], out.latents[:, :, 2])


def test_audio_changes_the_video_and_guidance_scales_matter(setup):
    pipe, text, null_text, image, mel = setup
    base = _run(setup, audio_guidance_scale=4.0).latents
    assert not torch.equal(base, _run(setup, audio_guidance_scale=1.0).latents)
    other = pipe(
        image,
        text,
        torch.randn_like(mel),
        num_frames=F_,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
    ).latents
    assert not torch.allclose(base, other)
    tokens = pipe.audio_encoder.encode(mel)
    same = pipe(
        image,
        text,
        audio_tokens=tokens,
        num_frames=F_,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
    ).latents
    assert torch.equal(base, same)


def _conds(setup):
    pipe, text, null_text, _, mel = setup
    enc = pipe.audio_encoder
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, F_, 8, 8, generator=g)
    return (
        pipe.unet,
        latents,
        torch.tensor(500),
        text,
        enc.encode(mel),
        enc.segment_mask(F_)[None],
        enc.null_audio_tokens(),
        null_text,
    )


def test_cfg_scale_one_is_the_conditional_prediction(setup):
    unet, x, t, text, audio, mask, null_a, null_t = _conds(setup)
    with torch.no_grad():
        cond = unet(x, t, text, audio, mask)
        no_audio = unet(x, t, text, null_a, mask)
        no_text = unet(x, t, null_t, audio, mask)
        nothing = unet(x, t, null_t, null_a, mask)
        audio_cfg = guided_eps(unet, x, t, text, audio, mask, null_audio=null_a, audio_scale=1.0)
        dual = guided_eps(unet, x, t, text, audio, mask, null_a, null_t, audio_scale=1.0, text_scale=1.0)
        text_cfg = guided_eps(unet, x, t, text, audio, mask, null_text=null_t, text_scale=1.0)
        audio_zero = guided_eps(unet, x, t, text, audio, mask, null_audio=null_a, audio_scale=0.0)
        dual_4_2 = guided_eps(unet, x, t, text, audio, mask, null_a, null_t, audio_scale=4.0, text_scale=2.0)
    for got in (audio_cfg, dual, text_cfg):
        torch.testing.assert_close(got, cond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(audio_zero, no_audio, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        dual_4_2, nothing + 2.0 * (no_audio - nothing) + 4.0 * (cond - no_audio), atol=1e-4, rtol=1e-4
    )
    assert not torch.allclose(no_text, cond)


def test_text_guidance_needs_the_null_prompt(setup):
    pipe, text, _, image, mel = setup
    with pytest.raises(ValueError, match="null_text_emb"):
        pipe(image, text, mel, num_frames=F_, num_inference_steps=2, text_guidance_scale=2.0)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(image, text, num_frames=F_, num_inference_steps=2)
    dual = _run(setup, text_guidance_scale=2.0, num_inference_steps=2)
    assert dual.frames.shape == (1, F_, 3, 16, 16)


def test_write_video_muxes_h264_and_aac(setup, tmp_path):
    frames = _run(setup, num_inference_steps=2).frames[0]
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    path = write_video(tmp_path / "out" / "clip.mp4", frames, wave, fps=6, sample_rate=16000)
    assert not (tmp_path / "out" / "clip.mp4.part").exists()
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert audio.sample_rate == 16000 and video.average_rate == 6
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == F_ and decoded[0].shape == (16, 16, 3)
    expected = (frames[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(decoded[0].astype(float) - expected).mean() < 25  # lossy, but the same picture
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert samples.shape[1] >= 32000 and np.abs(samples).max() > 0.1
    silent = write_video(
        tmp_path / "silent.mp4", (frames.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    )
    with av.open(str(silent)) as container:
        assert len(container.streams.audio) == 0 and container.streams.video[0].frames == F_


def _reference_loop(setup, seed: int, steps: int, in_place: bool) -> torch.Tensor:
    """The sampling loop written out with diffusers' PNDMScheduler: ``in_place`` writes each step into the
    latents through a view, as the paper's pipeline (``video_latents[:, :, 1:] = scheduler.step(...)``)."""
    pipe, text, _, image, mel = setup
    scheduler = PNDMScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(seed)
    first = pipe.encode_image(image, g)
    noise = torch.randn((1, first.shape[1], F_ - 1, *first.shape[2:]), generator=g)
    latents = torch.cat([first[:, :, None], noise], dim=2) * scheduler.init_noise_sigma
    tokens, mask = pipe.audio_encoder.encode(mel), pipe.audio_encoder.segment_mask(F_)[None]
    null_audio = pipe.audio_encoder.null_audio_tokens()
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        eps = guided_eps(
            pipe.unet,
            scheduler.scale_model_input(latents, t),
            t,
            text,
            tokens,
            mask,
            null_audio,
            audio_scale=4.0,
        )
        if in_place:
            latents[:, :, 1:] = scheduler.step(eps[:, :, 1:], t, latents[:, :, 1:]).prev_sample
        else:
            moved = scheduler.step(eps[:, :, 1:], t, latents[:, :, 1:].clone()).prev_sample
            latents = torch.cat([latents[:, :, :1], moved], dim=2)
    return latents


@pytest.mark.parametrize("sampler, in_place", [("standard", False), ("authors", True)])
def test_each_sampler_follows_its_reference_loop(setup, sampler, in_place):
    out = _run(setup, seed=7, num_inference_steps=4, decode=False, sampler=sampler)
    torch.testing.assert_close(out.latents, _reference_loop(setup, 7, 4, in_place), rtol=0, atol=1e-6)


def test_the_authors_sampler_leaves_pndm_from_its_second_step(setup):
    """PNDM keeps the first step's sample by reference for the second (its warm-up); the in-place write
    has replaced it by then, so the trajectories agree after one step and part from the second on."""
    assert isinstance(setup[0].scheduler, PNDMScheduler)

    def latents(steps, sampler):
        return _run(setup, seed=7, num_inference_steps=steps, decode=False, sampler=sampler).latents

    assert torch.equal(latents(1, "authors"), latents(1, "standard"))
    for steps in (2, 3):
        assert (latents(steps, "authors") - latents(steps, "standard")).abs().max() > 1e-2
    with pytest.raises(ValueError, match="sampler must be standard or authors"):
        _run(setup, sampler="ddim")


def test_inference_schedule_is_the_one_the_unet_was_trained_with(tmp_path):
    """The SD folder's scheduler/ holds epsilon; a config that trains v-prediction must sample v-prediction
    (and the folder's own settings still come through where the config has none, e.g. skip_prk_steps)."""
    import dataclasses

    from asva_model.build import build_inference_scheduler, build_noise_scheduler

    cfg = make_tiny_pretrained(tmp_path, tiny_model_config())
    folder = PNDMScheduler.from_pretrained(cfg.pretrained_sd, subfolder="scheduler")
    assert folder.config.prediction_type == "epsilon"
    v = dataclasses.replace(
        cfg,
        noise_scheduler=dataclasses.replace(
            cfg.noise_scheduler, prediction_type="v_prediction", beta_end=0.02
        ),
    )
    sampling, training = build_inference_scheduler(v), build_noise_scheduler(v)
    assert sampling.config.prediction_type == training.config.prediction_type == "v_prediction"
    assert torch.equal(sampling.alphas_cumprod, training.alphas_cumprod)
    assert sampling.config.skip_prk_steps == folder.config.skip_prk_steps
    assert build_inference_scheduler(cfg).config.prediction_type == "epsilon"
