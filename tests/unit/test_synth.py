"""Synthetic AVSync15: layout, streams, determinism, audio-driven motion, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt
from asva_platform.dev.synth import (
    FPS_CHOICES,
    STYLES,
    _drive,
    _Painter,
    _split,
    load_ground_truth,
    main,
    make_spec,
    synthesize,
)
from tests.unit import data_fixtures as fx

synth_root = fx.synth_root  # shared fixture


def test_default_specs_look_like_avsync15():
    specs = [make_spec(0, c, i) for c in range(15) for i in range(100)]
    durations = np.array([s.duration for s in specs])
    assert durations.min() >= 2.0 and durations.max() <= 10.0
    assert 3.8 < durations.mean() < 5.0 and 3.0 < np.median(durations) < 4.5  # real: mean 4.37, median 3.5
    assert {Fraction(s.fps) for s in specs} == set(FPS_CHOICES)
    assert all(s.height != s.width and (s.height, s.width) != (256, 256) for s in specs)
    assert len({s.sample_rate for s in specs}) == 4 and {s.channels for s in specs} == {1, 2}
    for s in specs:
        assert len(s.onsets) >= 1 and s.onsets == sorted(s.onsets) and s.onsets[-1] < s.duration
        ends = np.array(s.onsets) + np.array(s.event_durations)
        assert np.all(np.array(s.onsets[1:]) > ends[:-1])  # events never overlap
    gaps = np.diff(np.concatenate([[0.0], specs[0].onsets]))
    assert len(set(np.round(gaps, 3))) == len(gaps)  # onsets are not periodic


def test_split_is_90_10_per_class():
    assert all(len(_split(0, c, 100)) == 10 for c in range(15))
    assert len(_split(0, 0, 10)) == 1 and len(_split(0, 0, 1)) == 0
    assert _split(0, 0, 100) != _split(1, 0, 100)


def test_dataset_layout_streams_and_ground_truth_agree(synth_root):
    root = synth_root
    assert {p.name for p in root.iterdir()} >= {
        "videos",
        "train.txt",
        "test.txt",
        "class_mapping.json",
        "synth_ground_truth.json",
    }
    mapping = json.loads((root / "class_mapping.json").read_text())
    assert mapping == {c: default_prompt(c) for c in AVSYNC15_CLASSES}
    assert mapping["playing_violin__fiddle"] == "playing violin fiddle"
    listed = (root / "train.txt").read_text().split() + (root / "test.txt").read_text().split()
    gt = load_ground_truth(root)
    assert sorted(listed) == sorted(gt) and len(listed) == 150
    assert sorted(str(p.relative_to(root / "videos")) for p in (root / "videos").rglob("*.mp4")) == sorted(
        listed
    )
    for name, spec in gt.items():
        with av.open(str(root / "videos" / name)) as c:
            (v,), (a,) = c.streams.video, c.streams.audio
            assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
            assert (v.codec_context.width, v.codec_context.height) == (spec.width, spec.height)
            assert v.average_rate == Fraction(spec.fps)
            assert (
                a.codec_context.sample_rate == spec.sample_rate and a.codec_context.channels == spec.channels
            )
            assert (
                abs(float(v.duration * v.time_base) - spec.duration) <= 1 / float(Fraction(spec.fps)) + 1e-6
            )
            assert abs(float(a.duration * a.time_base) - spec.duration) < 0.05


def test_generator_is_deterministic_for_a_seed(tmp_path):
    kw = dict(clips_per_class=1, min_duration=2.0, max_duration=2.3)
    a = synthesize(tmp_path / "a", seed=3, workers=1, **kw)
    b = synthesize(tmp_path / "b", seed=3, workers=2, **kw)  # worker count must not matter

    def digest(root: str) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*"))
            if p.is_file()
        }

    da = digest(a.out_dir)
    assert da == digest(b.out_dir) and len(da) == 15 + 4
    again = synthesize(tmp_path / "a", seed=3, workers=1, **kw)
    assert again.reused and again.seconds == 0.0 and digest(a.out_dir) == da
    (tmp_path / "a" / "videos" / "mine.txt").write_text("not the generator's")
    redo = synthesize(tmp_path / "a", seed=4, workers=2, **kw)  # other clips: the old ones are removed
    names = {str(p.relative_to(tmp_path / "a" / "videos")) for p in (tmp_path / "a" / "videos").rglob("*.*")}
    assert not redo.reused and names == set(load_ground_truth(tmp_path / "a")) | {"mine.txt"}
    other_seed = [make_spec(4, c, 0, 2.0, 2.3) for c in range(15)]
    assert all(s.onsets != make_spec(3, c, 0, 2.0, 2.3).onsets for c, s in enumerate(other_seed))


def _motion_near_and_far(class_idx: int) -> tuple[float, float]:
    """Mean frame-difference energy within 0.2 s of an onset vs > 0.6 s from any event, rendered frames."""
    near, far = [], []
    for i in range(3):
        spec = make_spec(11, class_idx, i, 4.0, 6.0)
        fps = float(Fraction(spec.fps))
        t = np.arange(int(spec.duration * fps)) / fps
        drive, painter = _drive(spec, t), _Painter(spec)
        frames = np.stack([painter.frame({k: v[j] for k, v in drive.items()}) for j in range(len(t))]).astype(
            float
        )
        energy = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
        mid = (t[:-1] + t[1:]) / 2
        onsets = np.array(spec.onsets)
        ends = onsets + np.array(spec.event_durations)
        dist_onset = np.abs(mid[:, None] - onsets[None]).min(axis=1)
        outside = np.all((mid[:, None] < onsets[None] - 0.6) | (mid[:, None] > ends[None] + 0.6), axis=1)
        near.extend(energy[dist_onset < 0.2])
        far.extend(energy[outside])
    return float(np.mean(near)), float(np.mean(far)) if far else 0.0


def test_every_class_moves_at_its_audio_events_and_rests_between():
    for c, class_dir in enumerate(AVSYNC15_CLASSES):
        near, far = _motion_near_and_far(c)
        assert near > 0.1 and near > 5 * far, (class_dir, STYLES[class_dir].motion, near, far)


def test_cli_writes_a_dataset_and_reports_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "asva_platform.dev.synth",
            "--out",
            str(out),
            "--clips-per-class",
            "1",
            "--seed",
            "5",
            "--max-duration",
            "2.2",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "15 clips" in proc.stdout and (out / "train.txt").is_file()
    assert len(load_ground_truth(out)) == 15
    assert main(["--out", str(tmp_path / "x"), "--clips-per-class", "0"]) == 2
    assert "clips_per_class" in capsys.readouterr().err


def test_a_class_subset_holds_exactly_the_full_sets_clips_of_those_classes(tmp_path):
    from asva_platform.dev.synth import class_indices

    s = synthesize(
        tmp_path / "sub",
        clips_per_class=2,
        seed=3,
        max_duration=2.5,
        workers=1,
        classes=["striking_bowling", "hammering"],
    )
    lines = (tmp_path / "sub" / "train.txt").read_text().split() + (
        tmp_path / "sub" / "test.txt"
    ).read_text().split()
    assert s.num_clips == 4 and {n.split("/")[0] for n in lines} == {"hammering", "striking_bowling"}
    want = {
        make_spec(3, c, i, max_duration=2.5).name
        for c in class_indices(["hammering", "striking_bowling"])
        for i in range(2)
    }
    assert set(lines) == want  # same specs (names, content seeds) as in the all-class dataset
    assert json.loads((tmp_path / "sub" / "class_mapping.json").read_text()) == {
        c: default_prompt(c) for c in AVSYNC15_CLASSES
    }
    with pytest.raises(ValueError, match="unknown"):
        synthesize(tmp_path / "bad", clips_per_class=1, classes=["hammer"])


def test_render_window_matches_the_clip_timing():
    from asva_model.data.config import SamplingConfig
    from asva_platform.dev.synth import render_window

    spec = make_spec(0, AVSYNC15_CLASSES.index("hammering"), 0)
    cfg = SamplingConfig(image_size=[32, 32])
    frames, wave, mel = render_window(spec, 0.5, cfg)
    assert frames.shape == (3, 12, 32, 32) and wave.shape == (32000,) and mel.shape == (1, 128, 204)
    onsets = [o for o in spec.onsets if 0.5 <= o < 2.4]
    at = [int((o - 0.5) * 16000) for o in onsets]  # the window's audio starts at 0.5 s
    assert onsets and all(np.abs(wave[i : i + 800]).max() > 10 * np.abs(wave[:40]).max() for i in at)
    # the object moves exactly when a sound starts: frame differences peak in the interval holding an onset
    motion = np.abs(np.diff(frames, axis=1)).mean(axis=(0, 2, 3))
    assert all(motion[min(int((o - 0.5) * 6), 10)] > 0 for o in onsets)
