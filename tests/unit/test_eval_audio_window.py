"""The evaluation scores the mel the sampling protocol defines (issue 29, item 5).

Under ``audio_window: authors`` a window whose audio ends before 2 s is not padded and its mel is zero-padded
(as the official loader). The evaluation used to pass the zero-padded waveform to the metrics, which took the
mel again: the last mel columns then held the log of silence instead of the padding value, and the sync
classifier's score moved with them. Real mp4s at 44.1 and 48 kHz; the sync classifier is a stand-in whose
score is a function of the mel's last columns, so the test sees which mel was scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asva_model.data.audio import resample, waveform_to_mel
from asva_model.data.avsync15 import ClipEntry
from asva_model.data.config import SamplingConfig
from asva_model.data.resample import sinc_resample
from asva_model.data.sampling import sample_clip, sample_windows
from asva_model.metrics.compute import _mels
from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.networks import MetricNetworks
from asva_model.metrics.protocol import EvalWindow
from asva_model.video_io import write_video
from asva_platform.evaluation.plan import VideoTask
from asva_platform.evaluation.worker import score_windows

AUTHORS = dict(frame_picking="authors", audio_window="authors", audio_channels="authors", resampler="sinc")
TAIL = 8  # mel columns the stand-in classifier looks at


def _source(path, sample_rate: int, seconds: float = 3.5) -> str:
    """Random frames and a noisy 440 Hz track at ``sample_rate``: a real mp4 whose tail window is short."""
    rng = np.random.default_rng(sample_rate)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    tone = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
    frames = rng.integers(0, 255, (int(seconds * 30), 32, 32, 3), dtype=np.uint8)
    return str(write_video(path, frames, tone.astype(np.float32), fps=30, sample_rate=sample_rate))


class TailScorer:
    """phi = the sum of the mel's last columns: any change there changes the score."""

    def __call__(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return mel[:, 0, :, -TAIL:].sum(dim=(1, 2))


def _phi(mel: np.ndarray) -> float:
    return float(np.asarray(mel, dtype=np.float64)[0, :, -TAIL:].sum())


@pytest.mark.parametrize(("sample_rate", "start"), [(44100, 1.52), (48000, 1.43)])
def test_the_short_tail_window_is_scored_on_the_protocols_mel(tmp_path, sample_rate, start):
    """Windows whose whole AAC frames cover less than 2 s by more than a mel hop: at 48 kHz, 31,744 samples
    (the case the issue measured); at 44.1 kHz, a window running past the track's end."""
    s = SamplingConfig(image_size=[32, 32], **AUTHORS)
    src = _source(tmp_path / "src.mp4", sample_rate)
    gt = sample_windows(src, [start], s)[0]
    assert gt.mel_samples < s.clip_samples and not gt.waveform[gt.mel_samples :].any()
    np.testing.assert_array_equal(gt.audio, gt.waveform[: gt.mel_samples])

    # the generated clip, written and re-decoded as the evaluation worker does (its own frames, the GT audio)
    gen_path = write_video(
        tmp_path / "gen.mp4",
        gt.frames.transpose(1, 0, 2, 3),
        gt.audio,
        fps=s.fps,
        sample_rate=s.audio_sample_rate,
    )
    gen = sample_clip(
        gen_path, 0.0, s
    )  # the generated side's mel: the protocol's loader on the mp4, as theirs

    window = EvalWindow("c/v.mp4", "c", 0, start)
    task = VideoTask(ClipEntry("videos/c/v.mp4", "c/v.mp4", "c", "c"), (window,))
    nets = MetricNetworks(avsync=TailScorer())
    scores = score_windows(
        [gt], [torch.from_numpy(gen.frames)], [gen], task, nets, MetricsConfig(metrics=["relsync"]), s
    )
    assert scores["phi_gt"][0] == pytest.approx(_phi(gt.mel), abs=1e-3)
    assert scores["phi_gen"][0] == pytest.approx(_phi(gen.mel), abs=1e-3)

    # the control: the mel of the padded waveform (what was scored before) differs where the audio ended
    padded = waveform_to_mel(gt.waveform, s)
    assert np.abs(padded - gt.mel).max() > 0.5
    assert abs(_phi(padded) - _phi(gt.mel)) > 10.0


def test_a_full_window_is_unchanged_by_the_protocol_mel(tmp_path):
    """A window with 2 s of audio: the mel of the waveform and the protocol's mel are the same numbers."""
    s = SamplingConfig(image_size=[32, 32], **AUTHORS)
    clip = sample_windows(_source(tmp_path / "src.mp4", 48000), [0.5], s)[0]
    assert clip.mel_samples == s.clip_samples
    np.testing.assert_allclose(waveform_to_mel(clip.waveform, s), clip.mel, atol=1e-6)


@pytest.mark.parametrize("resampler", ["soxr", "sinc"])
def test_the_metrics_resample_with_the_configured_resampler(resampler):
    """Audio handed to the metrics at another rate is resampled as the sampling config says (it was soxr
    whatever the config)."""
    rng = np.random.default_rng(1)
    rate = 48000
    wave = (0.3 * rng.standard_normal(2 * rate)).astype(np.float32)
    s = SamplingConfig(image_size=[32, 32], resampler=resampler)
    got = _mels([wave], rate, s)[0].numpy()
    expected = waveform_to_mel(resample(wave, rate, s.audio_sample_rate, resampler), s)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    other = "soxr" if resampler == "sinc" else "sinc"
    assert np.abs(got - waveform_to_mel(resample(wave, rate, s.audio_sample_rate, other), s)).max() > 1e-3
    if resampler == "sinc":
        np.testing.assert_allclose(resample(wave, rate, 16000, "sinc"), sinc_resample(wave, rate, 16000))
