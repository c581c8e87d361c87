"""Case 4, bad media through the real preprocessing job (real local Ray, moto S3): the job completes, every
bad file and bad list line is in the manifest's skip list with its reason, and the counts add up
(listed entries = cached clips + skipped; rows = windows of the good clips only)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from asva_model.data.sampling import grid_window_starts, probe_duration
from asva_platform.artifacts.cache import open_cache
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.errors import run_guarded
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage
from jobs.preprocess import main
from tests.unit.test_data_bad_inputs import _good_clip, _write_stream_only

pytestmark = pytest.mark.integration

WINDOWS = 1


def write_one_pixel_clip(path: Path) -> None:
    """A valid 3 s mp4 whose video is 1x1 (PNG frames: x264 cannot encode 1x1), with an AAC track."""
    with av.open(str(path), mode="w", format="mp4") as out:
        vs = out.add_stream("png", rate=25)
        vs.width, vs.height, vs.pix_fmt = 1, 1, "rgb24"
        audio = out.add_stream("aac", rate=16000, layout="mono")
        for i in range(75):
            frame = av.VideoFrame.from_ndarray(np.full((1, 1, 3), i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)).astype(np.float32)
        for k in range(0, 48000, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, k : k + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, k, Fraction(1, 16000)
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))


def corrupt_audio_packets(good: Path, out: Path) -> None:
    """Overwrite the payload of the audio packets after the 5th with noise (container still opens)."""
    data = bytearray(good.read_bytes())
    with av.open(str(good)) as c:
        spans = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size and p.pos is not None][5:]
    rng = np.random.default_rng(1)
    for pos, size in spans:
        data[pos : pos + size] = rng.integers(0, 256, size, np.uint8).tobytes()
    out.write_bytes(bytes(data))


def add_bad_media(data: Path) -> dict[str, str]:
    """Bad files in a real class folder, appended to train.txt; returns {list entry: expected reason}."""
    cls = (data / "train.txt").read_text().split()[0].split("/")[0]
    videos = data / "videos" / cls
    good = _good_clip(videos / "bad_good_source.mp4")
    files = {
        "bad_truncated.mp4": "corrupt_video",
        "bad_empty.mp4": "empty_file",
        "bad_no_audio.mp4": "no_audio_stream",
        "bad_no_video.mp4": "no_video_stream",
        "bad_short.mp4": "too_short",
        "bad_audio_stream.mp4": "corrupt_audio",
        "bad_one_pixel.mp4": "too_small",
    }
    (videos / "bad_truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (videos / "bad_empty.mp4").write_bytes(b"")
    _write_stream_only(videos / "bad_no_audio.mp4", video=True, audio=False)
    _write_stream_only(videos / "bad_no_video.mp4", video=False, audio=True)
    _good_clip(videos / "bad_short.mp4", duration=1.2)
    corrupt_audio_packets(good, videos / "bad_audio_stream.mp4")
    write_one_pixel_clip(videos / "bad_one_pixel.mp4")
    good.unlink()  # only a source for the broken copies
    expected = {f"{cls}/{name}": reason for name, reason in files.items()}
    wrong_lines = {
        f"{cls}/missing_clip.mp4": "missing_file",
        "no_such_class/clip.mp4": "unknown_class",
        f"/abs/{cls}/x.mp4": "bad_list_entry",
        f"{cls}/../escape.mp4": "bad_list_entry",
        f"{cls}/bad_empty.mp4": "bad_list_entry",  # a duplicate line
    }
    lines = (data / "train.txt").read_text().splitlines() + list(expected) + list(wrong_lines)
    (data / "train.txt").write_text("\n".join(lines) + "\n")
    return {**expected, **{k: v for k, v in wrong_lines.items()}}


def test_bad_media_is_skipped_with_reasons_and_counts_add_up(s3_server, ray_cluster, tmp_path, capsys):
    _, overrides = tiny_inputs(tmp_path, clips_per_class=1, max_duration=3.0, image_size=16)
    data = tmp_path / "data"
    expected = add_bad_media(data)
    config = tmp_path / "pp.yaml"
    config.write_text("name: bad-media\n")
    overrides += [
        f"storage.root=s3://{s3_server.bucket}/bad-media-{tmp_path.name}",
        f"preprocess.windows_per_clip={WINDOWS}",
        "preprocess.clips_per_shard=4",
        "tracking.required=false",
    ]
    rc = run_guarded(main, ["--config", str(config), "--json", *overrides])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    result = json.loads(captured.out.strip().splitlines()[-1])

    cfg = load_experiment(str(config), overrides)
    manifest = open_cache(
        Storage.from_config(cfg.storage), result["cache_id"], cfg.storage.cache_root
    ).manifest
    skipped = manifest.splits["train"].skipped
    got = {s["path"]: s["reason"] for s in skipped}
    dup = f"{next(iter(expected)).split('/')[0]}/bad_empty.mp4"
    # the duplicate line is a second entry with the same path: one record each
    assert sorted((s["path"], s["reason"]) for s in skipped) == sorted(
        [(p, r) for p, r in expected.items() if p != dup] + [(dup, "empty_file"), (dup, "bad_list_entry")]
    )
    assert all(s["detail"] for s in skipped), [s for s in skipped if not s["detail"]]
    assert got and result["skipped"] and len(result["skipped"]) == len(skipped)

    # counts add up: every listed entry is either cached or skipped; rows = windows of the good clips
    listed = {
        split: [ln.strip() for ln in (data / f"{split}.txt").read_text().splitlines() if ln.strip()]
        for split in ("train", "test")
    }
    good = {
        split: [p for p in entries if not p.split("/")[-1].startswith("bad_") and p not in expected]
        for split, entries in listed.items()
    }
    for split in ("train", "test"):
        m = manifest.splits[split]
        assert m.clips + len(m.skipped) == len(listed[split]), split
        assert m.clips == len(good[split])
        windows = sum(
            len(
                grid_window_starts(
                    probe_duration(str(data / "videos" / p), cfg.sampling), cfg.sampling, WINDOWS
                )
            )
            for p in good[split]
        )
        assert m.rows == windows
    assert manifest.totals.skipped == len(skipped) + len(manifest.splits["test"].skipped)
