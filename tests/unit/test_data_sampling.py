"""Clip sampling: exact shapes/dtypes, frame timestamps, window starts, decode-once == per-window, mel."""

from __future__ import annotations

import random

import kaldi_native_fbank as knf
import numpy as np
import pytest

from asva_model.data.audio import kaldi_fbank, kaldi_mel_banks, waveform_to_mel
from asva_model.data.avsync15 import read_split
from asva_model.data.config import SamplingConfig
from asva_model.data.sampling import (
    entry_span,
    grid_window_starts,
    probe,
    probe_duration,
    sample_clip,
    sample_grid_windows,
    sample_windows,
    test_window_starts,
    train_window_start,
    transform_frames,
)
from asva_platform.dev.synth import STYLES, load_ground_truth
from tests.unit import data_fixtures as fx
from tests.unit.data_fixtures import dataset_cfg

small_cfg = fx.small_cfg  # shared fixture
synth_root = fx.synth_root  # shared fixture

# ---------------------------------------------------------------------------------------------
# Window starts


def test_train_start_is_uniform_over_the_valid_range():
    cfg = SamplingConfig()
    rng = np.random.default_rng(0)
    starts = np.array([train_window_start(5.0, rng, cfg) for _ in range(4000)])
    assert starts.min() >= 0.0 and starts.max() <= 3.0
    assert abs(starts.mean() - 1.5) < 0.05 and np.histogram(starts, bins=6, range=(0, 3))[0].min() > 550
    assert train_window_start(2.0, rng, cfg) == 0.0
    assert 0.0 <= train_window_start(4.0, random.Random(1), cfg) <= 2.0  # random.Random works too


def test_grid_aligned_train_start_snaps_down_to_the_fps_grid():
    cfg = SamplingConfig(grid_aligned=True)
    rng = np.random.default_rng(1)
    starts = np.array([train_window_start(4.3, rng, cfg) for _ in range(2000)])
    steps = starts * cfg.fps
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert set(np.round(steps).astype(int)) == set(range(14))  # 0 .. floor(2.3 * 6) = 13


def test_test_starts_are_linspace_and_grid_windows_cover_every_grid_point():
    cfg = SamplingConfig()
    np.testing.assert_allclose(test_window_starts(5.0, cfg), [0.0, 1.5, 3.0])
    np.testing.assert_allclose(test_window_starts(2.0, cfg), [0.0, 0.0, 0.0])
    grid = SamplingConfig(grid_aligned=True)
    np.testing.assert_allclose(test_window_starts(5.0, grid), [0.0, 1.5, 3.0])
    np.testing.assert_allclose(test_window_starts(4.3, grid), [0.0, 7 / 6, 13 / 6])
    np.testing.assert_allclose(grid_window_starts(2.5, cfg), np.arange(4) / 6)  # 2.5 s: 0, 1/6, 2/6, 3/6
    assert len(grid_window_starts(4.0, cfg)) == 13 and len(grid_window_starts(2.0, cfg)) == 1
    np.testing.assert_allclose(grid_window_starts(4.0, cfg, count=3), [0.0, 1.0, 2.0])
    assert len(grid_window_starts(4.0, cfg, count=100)) == 13


# ---------------------------------------------------------------------------------------------
# Sampled tensors


def test_sampled_clip_has_exact_shapes_dtypes_and_ranges(synth_root):
    entry = read_split(dataset_cfg(synth_root), "test").entries[0]
    path = str(synth_root / entry.path)
    for cfg in (SamplingConfig(), SamplingConfig(image_size=[128, 256])):
        clip = sample_clip(path, 0.1, cfg, flip=False)
        h, w = cfg.image_size
        assert clip.frames.shape == (3, 12, h, w) and clip.frames.dtype == np.float32
        assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0 and clip.frames.std() > 0.01
        assert clip.waveform.shape == (32000,) and clip.waveform.dtype == np.float32
        assert clip.mel.shape == (1, 128, 204) and clip.mel.dtype == np.float32
        assert clip.frame_times.shape == (12,) and clip.start == 0.1
        # 2 s at 16 kHz give 198 Kaldi frames: the last 6 columns are ImageBind's zero padding, normalised
        np.testing.assert_allclose(clip.mel[0, :, 198:], (0 - cfg.mel_mean) / cfg.mel_std, rtol=1e-6)
        assert np.all(np.isfinite(clip.mel)) and clip.mel[0, :, :198].std() > 0.1


def test_frame_timestamps_match_k_over_6_within_one_native_frame(synth_root, small_cfg):
    gt = load_ground_truth(synth_root)
    rng = np.random.default_rng(0)
    checked = 0
    for entry in read_split(dataset_cfg(synth_root), "train").entries[::3]:
        path = str(synth_root / entry.path)
        info = probe(path, small_cfg)
        assert abs(info.fps - float(eval(gt[entry.name].fps))) < 1e-6
        for start in (0.0, float(rng.uniform(0, max(info.duration - 2.0, 0.0)))):
            clip = sample_clip(path, start, small_cfg)
            offset = clip.frame_times - (start + np.arange(12) / 6.0)
            assert np.all(offset >= -1e-4), (entry.name, start, offset)
            assert np.all(offset < 1.0 / info.fps + 1e-4), (entry.name, start, offset)
            checked += 1
    assert checked >= 60


def test_window_past_the_end_repeats_the_last_frame_and_zero_pads_audio(synth_root):
    """Up to short_clip_tolerance past the end, the official loader's behaviour: repeat the last frame."""
    cfg = SamplingConfig(image_size=[64, 64], short_clip_tolerance=0.5)
    path = str(synth_root / read_split(dataset_cfg(synth_root), "test").entries[2].path)
    info = probe(path, cfg)
    start = info.duration - 2.0 + 0.4
    clip = sample_clip(path, start, cfg)
    assert clip.frame_times[-1] == clip.frame_times[-2] and clip.frame_times[-1] < info.video_end
    np.testing.assert_array_equal(clip.frames[:, -1], clip.frames[:, -2])
    tail = clip.waveform[int((info.audio_end - start + 0.01) * 16000) :]
    assert len(tail) > 1000 and np.abs(tail).max() < 1e-4  # zeros, up to resampler ringing (~1e-6)
    with pytest.raises(ValueError, match="window starts must lie"):
        sample_clip(path, start + 0.2, cfg)


def test_flip_mirrors_the_frames_only(synth_root, small_cfg):
    path = str(synth_root / read_split(dataset_cfg(synth_root), "test").entries[1].path)
    a = sample_clip(path, 0.0, small_cfg, flip=False)
    b = sample_clip(path, 0.0, small_cfg, flip=True)
    assert b.flipped and not a.flipped
    np.testing.assert_array_equal(b.frames, a.frames[..., ::-1])
    np.testing.assert_array_equal(b.waveform, a.waveform)


def test_decode_once_gives_the_same_windows_as_decoding_each(synth_root, small_cfg):
    path = str(synth_root / read_split(dataset_cfg(synth_root), "train").entries[5].path)
    duration = probe_duration(path, small_cfg)
    grid = sample_grid_windows(path, small_cfg)
    assert len(grid) == len(grid_window_starts(duration, small_cfg)) >= 1
    for clip in grid[:: max(1, len(grid) // 4)]:
        single = sample_clip(path, clip.start, small_cfg)
        np.testing.assert_array_equal(clip.frame_times, single.frame_times)
        np.testing.assert_array_equal(clip.frames, single.frames)
        # one resampling of the whole clip vs one per window, on the same sample grid: equal up to float noise
        np.testing.assert_allclose(clip.waveform, single.waveform, atol=1e-4)
        np.testing.assert_allclose(clip.mel, single.mel, atol=1e-3)
    starts = [0.0, duration - 2.0]
    flipped = sample_windows(path, starts, small_cfg, flips=[True, False])
    assert [c.flipped for c in flipped] == [True, False] and [c.start for c in flipped] == starts


def test_clip_entry_span_restricts_windows(synth_root, small_cfg):
    entries = read_split(dataset_cfg(synth_root), "train").entries
    entry = next(e for e in entries if probe(str(synth_root / e.path), small_cfg).duration > 2.6)
    info = probe(str(synth_root / entry.path), small_cfg)
    assert entry_span(entry, info) == (0.0, info.duration)
    from dataclasses import replace

    sub = replace(entry, start=0.25, end=min(2.5, info.duration))
    offset, dur = entry_span(sub, info)
    windows = sample_grid_windows(str(synth_root / entry.path), small_cfg, entry=sub)
    assert offset == 0.25 and windows[0].start == 0.25
    assert all(0.25 <= w.start <= 0.25 + max(dur - 2.0, 0) + 1e-9 for w in windows)


def test_audio_events_land_at_the_ground_truth_onsets(synth_root, small_cfg):
    """The decoded, resampled audio starts each percussive event within 5 ms of its recorded onset."""
    gt = load_ground_truth(synth_root)
    errors = []
    for name, spec in gt.items():
        if not STYLES[spec.class_dir].percussive:
            continue
        path = str(synth_root / "videos" / name)
        clip = sample_clip(path, 0.0, small_cfg)
        env = np.abs(clip.waveform)
        for onset in spec.onsets:
            if onset > 1.9:
                continue
            i = int(onset * 16000)
            before = env[max(i - 400, 0) : i - 40]  # 25 ms .. 2.5 ms before: the noise floor
            peak = env[i : i + 800].max()
            first = i - 80 + int(np.argmax(env[i - 80 : i + 800] > 0.3 * peak))
            errors.append(first / 16000 - onset)
            assert before.max() < 0.3 * peak, (name, onset)
    assert len(errors) > 20 and np.max(np.abs(errors)) < 0.005, errors


def test_resize_crops_to_the_output_aspect_before_scaling():
    rgb = np.zeros((96, 160, 3), dtype=np.uint8)
    rgb[:, :16] = 255  # a white stripe at the far left: cropped away for a square output
    rgb[:, 72:88] = 200  # a stripe in the centre: kept
    out = transform_frames([rgb], SamplingConfig(image_size=[48, 48]))
    assert out.shape == (3, 1, 48, 48)
    assert out[:, 0, :, :4].max() < 0.05
    assert abs(out[0, 0, 24, 24] - 200 / 255) < 0.02


# ---------------------------------------------------------------------------------------------
# Mel


@pytest.mark.parametrize("bins", [40, 80])
def test_kaldi_fbank_matches_an_independent_kaldi_implementation(bins):
    """kaldi-native-fbank (C++ Kaldi port) with ImageBind's options; it refuses 128 bins at a 512 FFT
    because one filter is empty (see the next test), so the comparison runs at 40 and 80 bins."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.5) + 0.02 * rng.standard_normal(32000)).astype(np.float32)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = bins
    opts.use_energy = False
    opts.htk_compat = True
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, x.tolist())
    fb.input_finished()
    ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ours = kaldi_fbank(x, 16000, bins)
    assert ours.shape == ref.shape == (198, bins)
    np.testing.assert_allclose(ours, ref, atol=1e-3)  # measured: ~1e-4


def test_128_bin_filterbank_has_imagebinds_empty_filter():
    """With 128 filters over 256 FFT bins, filter 3 catches no FFT bin (torchaudio does not check this; Kaldi
    itself would refuse), so ImageBind's mel row 3 is always log(eps)."""
    banks = kaldi_mel_banks(128, 512, 16000.0)
    assert banks.shape == (128, 257) and float(np.abs(banks[:, -1]).max()) == 0.0
    assert np.flatnonzero(banks.sum(1) == 0).tolist() == [3]
    cfg = SamplingConfig()
    mel = waveform_to_mel(np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1, cfg)
    np.testing.assert_allclose(
        mel[0, 3, :198], (np.log(np.finfo(np.float32).eps) - cfg.mel_mean) / cfg.mel_std, rtol=1e-5
    )


def test_mel_of_a_tone_peaks_in_the_right_bin_and_ignores_dc():
    cfg = SamplingConfig()
    t = np.arange(32000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = waveform_to_mel(tone, cfg)
    peak_bin = int(mel[0, :, 50:150].mean(axis=1).argmax())
    centre = 700 * (
        np.exp(
            (
                1127 * np.log(1 + 20 / 700)
                + (peak_bin + 1) * (1127 * np.log(1 + 8000 / 700) - 1127 * np.log(1 + 20 / 700)) / 129
            )
            / 1127
        )
        - 1
    )
    assert abs(centre - 1000) < 60
    np.testing.assert_allclose(waveform_to_mel(tone + 0.25, cfg), mel, atol=1e-3)  # mean is removed
