"""Every kind of bad input gives its typed reason; a split with bad clips loses nothing silently."""

from __future__ import annotations

import dataclasses
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from asva_model.data.avsync15 import read_split
from asva_model.data.config import SamplingConfig
from asva_model.data.errors import BadClipError, SkipReason
from asva_model.data.sampling import probe, probe_entries, sample_clip, sample_grid_windows
from asva_platform.dev.synth import make_spec, write_clip
from tests.unit import data_fixtures as fx
from tests.unit.data_fixtures import dataset_cfg

small_cfg = fx.small_cfg  # shared fixture


def _good_clip(path: Path, duration: float = 3.0, **changes) -> Path:
    spec = dataclasses.replace(make_spec(0, 5, 0, duration, duration), **changes)
    write_clip(spec, path)
    return path


def _write_stream_only(path: Path, video: bool, audio: bool, faststart: bool = False) -> Path:
    """An mp4 (or m4a) with only the requested streams, 3 s long."""
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=opts) as out:
        vs = out.add_stream("libx264", rate=25) if video else None
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        as_ = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        if vs is not None:
            for i in range(75):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 3, np.uint8), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 25)
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        if as_ is not None:
            t = np.arange(48000) / 16000
            for k in range(0, 48000, 1024):
                block = (0.3 * np.sin(2 * np.pi * 440 * t[k : k + 1024]))[None].astype(np.float32)
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 16000, k, Fraction(1, 16000)
                out.mux(as_.encode(af))
            out.mux(as_.encode(None))
    return path


def _reason(path: Path | str, cfg: SamplingConfig) -> SkipReason:
    with pytest.raises(BadClipError) as err:
        probe(path, cfg)
        sample_clip(path, 0.0, cfg)
    assert err.value.detail
    return err.value.reason


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    """One directory with a good clip and every kind of broken one, made here with PyAV."""
    d = tmp_path_factory.mktemp("bad_inputs")
    good = _good_clip(d / "good.mp4")
    data = good.read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end: cannot open
    fast = _write_stream_only(d / "faststart.mp4", video=True, audio=True, faststart=True)
    (d / "truncated_faststart.mp4").write_bytes(
        fast.read_bytes()[: fast.stat().st_size // 3]
    )  # opens, ends early
    _write_stream_only(d / "no_audio.mp4", video=True, audio=False)
    _write_stream_only(d / "no_video.m4a", video=False, audio=True)
    _good_clip(d / "too_short.mp4", duration=1.2)
    _good_clip(d / "tiny.mp4", height=2, width=2)
    with av.open(str(good)) as c:  # overwrite the payload of later audio packets with noise
        spans = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size and p.pos is not None][5:]
    broken = bytearray(data)
    rng = np.random.default_rng(1)
    for pos, size in spans:
        broken[pos : pos + size] = rng.integers(0, 256, size, np.uint8).tobytes()
    (d / "bad_audio.mp4").write_bytes(bytes(broken))
    return d


EXPECTED = {
    "empty.mp4": SkipReason.EMPTY_FILE,
    "garbage.mp4": SkipReason.CORRUPT_VIDEO,
    "truncated.mp4": SkipReason.CORRUPT_VIDEO,
    "truncated_faststart.mp4": SkipReason.CORRUPT_VIDEO,
    "no_audio.mp4": SkipReason.NO_AUDIO_STREAM,
    "no_video.m4a": SkipReason.NO_VIDEO_STREAM,
    "too_short.mp4": SkipReason.TOO_SHORT,
    "tiny.mp4": SkipReason.TOO_SMALL,
    "bad_audio.mp4": SkipReason.CORRUPT_AUDIO,
    "missing.mp4": SkipReason.MISSING_FILE,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_gives_its_reason(bad_dir, small_cfg, name):
    assert _reason(bad_dir / name, small_cfg) == EXPECTED[name]


def test_the_good_reference_clip_decodes(bad_dir, small_cfg):
    clip = sample_clip(bad_dir / "good.mp4", 0.5, small_cfg)
    assert clip.frames.shape == (3, 12, 64, 64)
    assert (bad_dir / "faststart.mp4").stat().st_size > 0
    assert len(sample_grid_windows(bad_dir / "faststart.mp4", small_cfg)) == 7  # 3 s: starts 0 .. 1 s
    with open(bad_dir / "good.mp4", "rb") as f:  # one file object, used again and again (as from S3)
        info = probe(f, small_cfg)
        again = sample_clip(f, 0.5, small_cfg, False, info)
        assert len(sample_grid_windows(f, small_cfg)) == 7 and not f.closed
    np.testing.assert_array_equal(again.frames, clip.frames)


def test_file_objects_report_the_same_reasons(bad_dir, small_cfg):
    for name in ("empty.mp4", "truncated.mp4", "no_audio.mp4", "bad_audio.mp4"):
        with open(bad_dir / name, "rb") as f, pytest.raises(BadClipError) as err:
            probe(f, small_cfg)
            sample_clip(f, 0.0, small_cfg)
        assert err.value.reason == EXPECTED[name]


def test_short_clip_within_tolerance_is_kept_and_beyond_is_too_short(tmp_path):
    clip = _good_clip(tmp_path / "c.mp4", duration=1.96)  # a "2 s" clip that measures a little less
    cfg = SamplingConfig(image_size=[32, 32])
    assert sample_clip(clip, 0.0, cfg).frames.shape == (3, 12, 32, 32)
    with pytest.raises(BadClipError) as err:
        sample_clip(clip, 0.0, dataclasses.replace(cfg, short_clip_tolerance=0.0))
    assert err.value.reason == SkipReason.TOO_SHORT and "1.9" in err.value.detail


def test_probe_entries_moves_bad_clips_to_skipped_with_reasons(bad_dir, tmp_path, small_cfg):
    """A dataset whose list mixes good and broken files: every line ends up an entry or a typed skip."""
    root = tmp_path / "ds"
    for name in EXPECTED:
        if name != "missing.mp4":
            (root / "videos" / "hammering").mkdir(parents=True, exist_ok=True)
            shutil.copy(bad_dir / name, root / "videos" / "hammering" / name)
    shutil.copy(bad_dir / "good.mp4", root / "videos" / "hammering" / "good.mp4")
    (root / "class_mapping.json").write_text('{"hammering": "hammering"}')
    lines = ["hammering/good.mp4"] + [f"hammering/{n}" for n in EXPECTED] + ["unknown/x.mp4"]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    listing = read_split(dataset_cfg(root), "train")
    probed, infos = probe_entries(listing, str(root), small_cfg, full_decode=True)
    assert [e.name for e in probed.entries] == ["hammering/good.mp4"] and set(infos) == {"hammering/good.mp4"}
    reasons = {s.entry: s.reason for s in probed.skipped}
    assert reasons == {f"hammering/{n}": r for n, r in EXPECTED.items()} | {
        "unknown/x.mp4": SkipReason.UNKNOWN_CLASS
    }
    assert len(probed.entries) + len(probed.skipped) == len(lines)  # nothing dropped silently
    # headers alone cannot see a truncated file that still opens, nor corrupt audio payloads
    quick, _ = probe_entries(listing, str(root), small_cfg)
    assert {e.name for e in quick.entries} == {
        "hammering/good.mp4",
        "hammering/truncated_faststart.mp4",
        "hammering/bad_audio.mp4",
    }


def test_bad_clip_error_names_the_clip():
    err = BadClipError(SkipReason.TOO_SHORT, "lasts 1.0 s").with_path("dog_barking/x.mp4")
    assert str(err) == "dog_barking/x.mp4: too_short: lasts 1.0 s" and err.reason is SkipReason.TOO_SHORT
    assert SkipReason("corrupt_video") is SkipReason.CORRUPT_VIDEO and SkipReason.EMPTY_FILE == "empty_file"
