"""The `authors` data protocol (``sampling.frame_picking / audio_window / audio_channels / resampler``) pinned on
constructed videos, against the official loader's rules (ASVA ``avgen/data/utils.py`` read through torchvision's
video_reader: frame times rounded to whole microseconds, an accumulated 1/fps target, whole audio frames,
``.view(c, t)`` of the decoder's buffer, torchaudio's default resampler); the clean rules keep today's behaviour."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from asva_model.data.config import SamplingConfig
from asva_model.data.decode import frame_to_mono, microsecond_time
from asva_model.data.resample import sinc_resample
from asva_model.data.sampling import sample_windows, test_window_starts
from asva_model.video_io import write_video

AUTHORS = dict(frame_picking="authors", audio_window="authors", audio_channels="authors", resampler="sinc")


def _video(path, fps: float, seconds: float, sample_rate: int = 44100, stereo=None):
    """Black frames at ``fps`` and a stereo AAC track: a 440 Hz tone left, ``stereo`` (or silence) right."""
    n = int(round(fps * seconds))
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = np.zeros_like(t) if stereo is None else stereo(t)
    return str(
        write_video(
            path,
            np.zeros((n, 32, 32, 3), np.uint8),
            np.stack([left, right]).astype(np.float32),
            fps=fps,
            sample_rate=sample_rate,
        )
    )


def _picked(path, fps, starts, **kw) -> list[list[int]]:
    cfg = SamplingConfig(image_size=[32, 32], **kw)
    return [np.round(c.frame_times * fps).astype(int).tolist() for c in sample_windows(path, starts, cfg)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("authors")
    return {fps: _video(d / f"{fps}.mp4", fps, 4.0) for fps in (30, 25, 24)}


def test_microsecond_time_rounds_half_away_from_zero_as_ffmpeg():
    # torchvision: av_rescale_q to whole microseconds, then double(us) * 1e-6 (bit for bit)
    assert microsecond_time(5120, Fraction(1, 15360)) == 333333 * 1e-6  # 333333.33 us
    assert microsecond_time(2560, Fraction(1, 15360)) == 166667 * 1e-6  # 166666.67 us
    assert microsecond_time(1, Fraction(1, 2_000_000)) == 1 * 1e-6  # 0.5 us: away from zero
    assert microsecond_time(-1, Fraction(1, 2_000_000)) == -1 * 1e-6


@pytest.mark.parametrize(
    "fps, exact, authors",
    [
        # where k/30 and k/6 coincide the microsecond rounding decides: 10/30 s reads 0.333333 < 1/6 + 1/6
        (30, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55], [0, 5, 11, 15, 20, 26, 30, 35, 41, 45, 50, 56]),
        (24, [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44], [0, 4, 9, 12, 16, 21, 24, 28, 33, 36, 40, 45]),
        (25, [0, 5, 9, 13, 17, 21, 25, 30, 34, 38, 42, 46], [0, 5, 9, 13, 17, 21, 25, 30, 34, 38, 42, 46]),
    ],
)
def test_frames_picked_from_a_source_video(videos, fps, exact, authors):
    assert _picked(videos[fps], fps, [0.0])[0] == exact
    assert _picked(videos[fps], fps, [0.0], frame_picking="authors")[0] == authors


def test_the_accumulated_target_shifts_later_windows_too(videos):
    # window at 1.0 s of a 25 fps video: 1.0 + 6 x (1/6) accumulates to 2.0000000000000004 > frame 50's 2.0 s
    exact, authors = (_picked(videos[25], 25, [1.0], frame_picking=m)[0] for m in ("exact", "authors"))
    assert exact[6] == 50 and authors[6] == 51 and exact[:6] == authors[:6] and exact[7:] == authors[7:]


def test_each_window_of_a_decode_once_walks_on_its_own(videos):
    starts = list(test_window_starts(4.0, SamplingConfig()))
    together = _picked(videos[30], 30, starts, frame_picking="authors")
    alone = [_picked(videos[30], 30, [s], frame_picking="authors")[0] for s in starts]
    assert together == alone


def test_a_generated_6_fps_clip_read_back(tmp_path):
    clip = _video(tmp_path / "gen.mp4", 6, 2.0, sample_rate=16000)  # what the evaluation writes and re-reads
    assert _picked(clip, 6, [0.0])[0] == list(range(12))
    # frame 2 (0.333333 s) misses the accumulated 1/6 + 1/6; one target per frame, so 11 repeats at the end
    assert _picked(clip, 6, [0.0], frame_picking="authors")[0] == [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11]


def _frame(data: np.ndarray, fmt: str) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
    frame.sample_rate = 16000
    return frame


def test_channel_rules_on_planar_and_packed_frames():
    left, right = np.arange(8, dtype=np.float32), 100 + np.arange(8, dtype=np.float32)
    planar = _frame(np.stack([left, right]), "fltp")  # AAC/MP3 decoders give planar float
    packed = _frame(np.stack([left, right], axis=1).reshape(1, -1), "flt")  # L0 R0 L1 R1 ...
    for frame in (planar, packed):
        np.testing.assert_array_equal(frame_to_mono(frame, "mean"), (left + right) / 2)
    # torchvision labels the decoder's buffer (samples, channels); `.view(c, t)[0]` is its first half
    np.testing.assert_array_equal(frame_to_mono(planar, "authors"), left)
    np.testing.assert_array_equal(frame_to_mono(packed, "authors"), [0, 100, 1, 101, 2, 102, 3, 103])


def _authors_reference_window(
    path: str, start: float, duration: float = 2.0, rate: int = 16000
) -> np.ndarray:
    """The official loader's audio steps written out here: whole frames with microsecond times in
    [start, start + duration], the first plane of each (planar AAC), torchaudio's resample, centre crop."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        parts = [
            f.to_ndarray()[0]
            for f in container.decode(stream)
            if start <= microsecond_time(f.pts, f.time_base) <= start + duration
        ]
        native = stream.codec_context.sample_rate
    wave = sinc_resample(np.concatenate(parts).astype(np.float32), native, rate)
    extra = len(wave) - int(duration * rate)
    return wave[extra // 2 : extra // 2 + int(duration * rate)] if extra > 0 else wave  # short: kept short


def test_authors_audio_window_stereo_and_resampler(tmp_path):
    rng = np.random.default_rng(0)
    path = _video(tmp_path / "noise.mp4", 30, 4.0, stereo=lambda t: 0.3 * rng.standard_normal(t.shape))
    starts = [0.0, 1.0, 1.9]
    authors = sample_windows(path, starts, SamplingConfig(image_size=[32, 32], **AUTHORS))
    exact = sample_windows(path, starts, SamplingConfig(image_size=[32, 32]))
    for start, a, e in zip(starts, authors, exact):
        reference = _authors_reference_window(path, start)
        # whole 1024-sample frames may cover a little less than 2 s: the rest of the stored waveform is zeros
        np.testing.assert_array_equal(a.waveform[: len(reference)], reference)
        assert not a.waveform[len(reference) :].any()
        # left only (a clean tone) vs the mean with the noisy right channel: the mels differ clearly
        assert np.abs(a.mel - e.mel).max() > 0.5
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    assert abs(float(np.sqrt(np.mean(authors[1].waveform ** 2))) - float(np.sqrt(np.mean(tone**2)))) < 0.01


def test_clean_rules_are_unchanged_by_the_protocol_fields(videos):
    """Each authors field alone changes only its own part of a window."""
    base = sample_windows(videos[30], [1.0], SamplingConfig(image_size=[32, 32]))[0]
    frames_only = sample_windows(
        videos[30], [1.0], SamplingConfig(image_size=[32, 32], frame_picking="authors")
    )[0]
    np.testing.assert_array_equal(frames_only.waveform, base.waveform)
    assert not np.array_equal(frames_only.frame_times, base.frame_times)
    audio_only = sample_windows(videos[30], [1.0], SamplingConfig(image_size=[32, 32], resampler="sinc"))[0]
    np.testing.assert_array_equal(audio_only.frame_times, base.frame_times)
    assert not np.array_equal(audio_only.waveform, base.waveform)
    assert np.abs(audio_only.waveform - base.waveform).max() < 0.05  # both band-limited: same signal


def test_a_short_authors_window_pads_its_mel_not_its_audio(tmp_path):
    """At 1.0 s into this 44.1 kHz track the whole frames in [1, 3] s cover 86 x 1024 samples = 1.997 s: the
    official loader keeps them as they are (fewer kaldi frames, the mel zero-padded), ours pads the audio."""
    path = _video(tmp_path / "tone.mp4", 30, 4.0)
    authors = SamplingConfig(image_size=[32, 32], **AUTHORS)
    clip = sample_windows(path, [1.0], authors)[0]
    real = len(_authors_reference_window(path, 1.0))
    assert real < authors.clip_samples and not clip.waveform[real:].any()
    kaldi_frames = (real - 400) // 160 + 1  # 25 ms frames every 10 ms, whole frames only
    padding = (0.0 - authors.mel_mean) / authors.mel_std  # a zero fbank column, normalised
    np.testing.assert_allclose(clip.mel[0, :, kaldi_frames:], padding, rtol=0, atol=1e-6)
    assert np.abs(clip.mel[0, :, kaldi_frames - 1] - padding).mean() > 0.5  # the last real column
