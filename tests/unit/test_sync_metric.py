"""The weights-free sync metric ranks synced synthetic clips above shifted and mismatched audio."""

from __future__ import annotations

import numpy as np
import pytest

from asva_model.data.audio import window_samples
from asva_model.data.sampling import decode_windows, probe, window_from_decoded
from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.stats import wilson_interval
from asva_model.metrics.sync import (
    circular_shift,
    motion_curve,
    motion_energy,
    onset_curve,
    sync_score,
)
from tests.unit import data_fixtures as fx

small_cfg = fx.small_cfg  # shared fixture
synth_root = fx.synth_root  # shared fixture

SHIFTS = (0.25, -0.25, 0.5, -0.5)


@pytest.fixture(scope="module")
def decoded_clips(synth_root):
    """Every third clip of the synthetic set, decoded once with its head/tail windows and shifted ones."""
    from asva_model.data.config import SamplingConfig

    cfg = SamplingConfig(image_size=[64, 64])
    out = []
    for path in sorted((synth_root / "videos").rglob("*.mp4"))[::3]:
        info = probe(path, cfg)
        last = max(info.duration - 2.0, 0.0)
        windows = sorted({0.0, last})
        extra = sorted({s + d for s in windows for d in SHIFTS if 0.0 <= s + d <= last})
        out.append((path, windows, decode_windows(path, sorted(set(windows + extra)), cfg, info)))
    return cfg, out


def test_ranks_synced_above_shifted_and_other_audio(decoded_clips):
    """Rates over 2-s, 6-fps windows (what the model generates): reported in the failure message."""
    cfg, clips = decoded_clips
    rng = np.random.default_rng(0)
    shifted, other, synced_scores = [], [], []
    for i, (_, windows, dec) in enumerate(clips):
        for start in windows:
            clip = window_from_decoded(dec, start, cfg)
            synced = sync_score(clip.frames, clip.waveform, 16000, cfg.fps).score
            synced_scores.append(synced)
            for d in SHIFTS:
                if start + d in dec.starts:
                    audio = window_samples(dec.audio.samples, dec.audio.start, start + d, cfg)
                    shifted.append(synced > sync_score(clip.frames, audio, 16000, cfg.fps).score)
            _, o_windows, o_dec = clips[(i + 1 + int(rng.integers(len(clips) - 1))) % len(clips)]
            audio = window_samples(o_dec.audio.samples, o_dec.audio.start, o_windows[0], cfg)
            other.append(synced > sync_score(clip.frames, audio, 16000, cfg.fps).score)
    rates = (
        f"shifted: {np.mean(shifted):.3f} of {len(shifted)}, other clip: {np.mean(other):.3f} of {len(other)}"
    )
    print(f"\nsync ranking rates ({rates}); mean synced score {np.mean(synced_scores):.3f}")
    assert len(shifted) >= 60 and len(other) >= 80
    assert np.mean(shifted) >= 0.85 and np.mean(other) >= 0.85, rates


def test_lag_search_recovers_a_known_audio_delay(decoded_clips):
    cfg, clips = decoded_clips
    errors = []
    for _, _, dec in clips:
        for d in (0.25, 0.5):
            if d in [round(s, 9) for s in dec.starts]:
                clip = window_from_decoded(dec, 0.0, cfg)
                late = window_samples(dec.audio.samples, dec.audio.start, -d, cfg)  # audio arrives d s late
                errors.append(sync_score(clip.frames, late, 16000, cfg.fps).lag_s - d)
    assert len(errors) >= 15
    assert np.median(np.abs(errors)) <= 0.1, np.round(errors, 2)


def test_layouts_flat_input_and_bad_arguments():
    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(12, 3, 16, 16)).astype(np.float32)
    wave = rng.standard_normal(32000).astype(np.float32) * 0.1
    a = sync_score(frames, wave, 16000, 6.0)
    b = sync_score(np.moveaxis(frames, 0, 1), wave, 16000, 6.0)  # (3, N, H, W)
    assert a.score == b.score and -1.0 <= a.score <= 1.0 and len(a.lags_s) == len(a.corrs) == 51
    assert sync_score(np.zeros((12, 3, 8, 8)), wave, 16000, 6.0).score == 0.0  # nothing moves
    assert sync_score(frames, np.zeros(32000), 16000, 6.0).score == 0.0  # silence
    assert motion_energy(np.ones((3, 5, 4, 4))).shape == (4,)
    with pytest.raises(ValueError, match="frames"):
        sync_score(np.zeros((12, 4, 8, 8)), wave, 16000, 6.0)
    with pytest.raises(ValueError, match="at least 4 frames"):
        sync_score(frames[:3], wave, 16000, 6.0)
    with pytest.raises(ValueError, match="audio_feature"):
        sync_score(frames, wave, 16000, 6.0, audio_feature="nope")
    assert isinstance(sync_score(frames, wave, 16000, 6.0, audio_feature="onset_strength").score, float)


def test_synced_clips_beat_their_own_audio_circularly_shifted(decoded_clips):
    """The Sync_shifted control at the default eval.metrics.sync_shift_s (1 s) on the synthetic windows:
    the win rate (and its Wilson interval) is what summarize() reports as Sync_win_rate."""
    cfg, clips = decoded_clips
    wins = []
    for _, windows, dec in clips:
        for start in windows:
            clip = window_from_decoded(dec, start, cfg)
            synced = sync_score(clip.frames, clip.waveform, 16000, cfg.fps).score
            rolled = circular_shift(clip.waveform, 16000, MetricsConfig().sync_shift_s)
            wins.append(synced > sync_score(clip.frames, rolled, 16000, cfg.fps).score)
    rate = wilson_interval(int(np.sum(wins)), len(wins))
    print(
        f"\nwin rate against the 1-s circular shift: {rate.estimate:.3f} [{rate.low:.3f}, {rate.high:.3f}] "
        f"of {len(wins)}"
    )
    assert len(wins) >= 40 and rate.low > 0.75, rate


def test_circular_shift_rolls_the_audio_later_and_refuses_a_shift_as_long_as_the_window():
    x = np.arange(8.0)
    np.testing.assert_array_equal(circular_shift(x, 4, 0.5), [6, 7, 0, 1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"sync_shift_s 2.0 s \(8 samples\) must be > 0 and shorter"):
        circular_shift(x, 4, 2.0)


def test_the_curves_share_one_time_axis_the_motion_at_its_interval_the_sound_at_its_onset():
    """What the comparison page draws: a change between frames 4 and 5 (at 6 fps) sits at 0.75 s, the middle
    of the interval sync_score pairs with the audio there; a sound struck at 0.8 s peaks at 0.8 s."""
    frames = np.zeros((12, 3, 8, 8), np.float32)
    frames[5:] = 1.0
    motion = motion_curve(frames, 6.0)
    np.testing.assert_allclose(motion.times, (np.arange(11) + 0.5) / 6.0)
    np.testing.assert_array_equal(motion.values, motion_energy(frames))
    assert motion.times[np.argmax(motion.values)] == pytest.approx(0.75)
    wave = np.zeros(32000, np.float32)
    t = np.arange(3200) / 16000
    wave[12800:16000] = 0.8 * np.exp(-t / 0.04) * np.sin(2 * np.pi * 700 * t)  # a struck sound from 0.8 s
    onset = onset_curve(wave, 16000)
    assert onset.times[1] == pytest.approx(0.01) and len(onset.times) == len(onset.values)
    assert abs(onset.times[np.argmax(onset.values)] - 0.8) <= 0.02
