"""AVSyncPipeline: determinism, fixed first frame, guidance algebra, mp4 output with muxed audio."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

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
    return pipe, text, null_text, torch.rand(1, 3, 16, 16, generator=g), torch.randn(1, 1, 128, 204, generator=g)


def _run(setup, seed=0, **kw):
    pipe, text, null_text, image, mel = setup
    kw.setdefault("num_inference_steps", 4)
    return pipe(image, text, mel, num_frames=F_, generator=torch.Generator().manual_seed(seed),
                null_text_emb=null_text, **kw)


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
    other = pipe(image, text, torch.randn_like(mel), num_frames=F_, num_inference_steps=4,
                 generator=torch.Generator().manual_seed(0)).latents
    assert not torch.allclose(base, other)
    tokens = pipe.audio_encoder.encode(mel)
    same = pipe(image, text, audio_tokens=tokens, num_frames=F_, num_inference_steps=4,
                generator=torch.Generator().manual_seed(0)).latents
    assert torch.equal(base, same)


def _conds(setup):
    pipe, text, null_text, _, mel = setup
    enc = pipe.audio_encoder
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, F_, 8, 8, generator=g)
    return (pipe.unet, latents, torch.tensor(500), text, enc.encode(mel), enc.segment_mask(F_)[None],
            enc.null_audio_tokens(), null_text)


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
    torch.testing.assert_close(dual_4_2, nothing + 2.0 * (no_audio - nothing) + 4.0 * (cond - no_audio),
                               atol=1e-4, rtol=1e-4)
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
    silent = write_video(tmp_path / "silent.mp4", (frames.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1))
    with av.open(str(silent)) as container:
        assert len(container.streams.audio) == 0 and container.streams.video[0].frames == F_
