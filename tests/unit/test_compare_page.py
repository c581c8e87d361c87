"""The comparison page's text: every metric with its interval, each video column headed by its run's Sync
with its interval, the "play all" control (its behaviour in a browser: tests/integration/test_ui_check.py),
and under each clip its sync curves."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from asva_model.data.avsync15 import AVSYNC15_CLASSES
from asva_platform.compare import ComparedRun, Comparison, headline_metric, render_page, with_interval
from asva_platform.dev.synth import make_spec, write_clip
from asva_platform.inference.config import GenerateConfig
from asva_platform.storage import Storage
from tests.records import clip, evaluation_record


def _run(name: str, metrics: dict) -> ComparedRun:
    return ComparedRun(name * 4, name, "0", {}, evaluation_record(metrics))


SYNC = {"Sync": 0.4123, "Sync_ci_low": 0.38, "Sync_ci_high": 0.441, "FVD": 812.0, "Sync_win_rate": 0.8}


def test_metrics_carry_their_interval_where_the_evaluation_reports_one():
    assert with_interval(SYNC, "Sync") == "0.4123 [0.38, 0.441]"
    assert with_interval(SYNC, "FVD") == "812"  # no interval reported: the value alone
    assert with_interval(SYNC, "IA") == "–"
    assert headline_metric([_run("a", SYNC), _run("b", SYNC)]) == "Sync"
    assert headline_metric([_run("a", {"FVD": 1.0}), _run("b", {"FVD": 2.0, "Sync": 0.1})]) == "FVD"
    assert headline_metric([_run("a", {})]) == ""


def test_each_column_states_its_sync_with_its_interval_and_the_page_can_play_all():
    runs = [_run("low", SYNC), _run("high", {**SYNC, "Sync": 0.5, "Sync_ci_low": 0.45, "Sync_ci_high": 0.55})]
    page, shown = render_page(Comparison(runs), Storage(), max_clips=0)
    assert shown == 1
    clips_table = page[page.index('<table class="clips">') :]
    header = clips_table.split("</tr>")[0]
    assert header.count('<span class="metric">') == 2
    assert "Sync 0.4123 [0.38, 0.441]" in header and "Sync 0.5 [0.45, 0.55]" in header
    runs_table = page[page.index('<table class="runs">') : page.index('<table class="clips">')]
    assert '<td class="num best">0.5 [0.45, 0.55]</td>' in runs_table  # best Sync marked, with its interval
    assert 'id="play-all" onclick="playAll()"' in page and "function playAll()" in page
    assert "requestAnimationFrame" in page  # one clock: the others follow the first video


def test_a_sweeps_children_are_shown_setting_by_setting_with_their_seeds_together():
    from asva_platform.compare import by_setting

    def child(name, scale, seed):
        run = _run(name, SYNC)
        run.record.generate = GenerateConfig(audio_guidance_scale=float(scale), seed=int(seed))
        return run

    started = [
        child("a", "4.0", "0"),
        child("b", "12.0", "0"),
        child("c", "1.0", "1"),
        child("d", "4.0", "1"),
        child("e", "1.0", "0"),
        child("f", "12.0", "1"),
    ]
    assert [r.name for r in by_setting(started)] == [
        "e",
        "c",
        "a",
        "d",
        "b",
        "f",
    ]  # 1, 4, 12 (numeric), seeds 0, 1


def _flash_clip(path, onsets: list[float]) -> str:
    """A 2-s synthetic cap-gun clip: a shot at each onset, the scene lighting up at the same instant."""
    spec = make_spec(0, AVSYNC15_CLASSES.index("cap_gun_shooting"), 0, 2.0, 2.0)
    n = len(onsets)
    spec = dataclasses.replace(
        spec, onsets=onsets, event_durations=[0.15] * n, pitches=[3000.0] * n, amplitudes=[0.9] * n
    )
    write_clip(spec, path)
    return str(path)


def _peak_times(points: str, axis: np.ndarray, count: int = 2, apart: float = 0.3) -> list[float]:
    """The ``count`` highest peaks of an SVG polyline/polygon, at least ``apart`` s from each other, in seconds
    read off the strip's drawn axis (``axis``: seconds from x)."""
    xy = np.array([[float(v) for v in p.split(",")] for p in points.split()])
    times, up = np.polyval(axis, xy[:, 0]), -xy[:, 1]
    peaks: list[float] = []
    for i in np.argsort(-up, kind="stable"):
        if len(peaks) < count and all(abs(times[i] - t) >= apart for t in peaks):
            peaks.append(float(times[i]))
    return sorted(peaks)


def test_under_each_clip_the_motion_of_every_column_and_the_sound_onsets_share_one_time_axis(tmp_path):
    """Ground truth, a run whose motion follows the sounds and one whose motion comes at other times: each
    strip has one line per column, in its heading's colour; the synced lines peak at the sounds, read off the
    strip's own time axis to within half a frame interval, the other run's at its own motion."""
    sounds = {"dog/v0_clip-00": [0.42, 1.25], "dog/v1_clip-00": [0.75, 1.55]}
    elsewhere = {"dog/v0_clip-00": [0.92, 1.6], "dog/v1_clip-00": [0.25, 1.1]}
    synced, off = _run("synced", SYNC), _run("off", SYNC)
    for run, motion in ((synced, sounds), (off, elsewhere)):
        run.record.sampling = {"image_size": [64, 64]}
        run.record.clips = []
        for i, name in enumerate(sounds):
            gt = _flash_clip(tmp_path / f"gt{i}.mp4", sounds[name])
            video = _flash_clip(tmp_path / f"{run.name}{i}.mp4", motion[name])
            run.record.clips.append(dataclasses.replace(clip(name), video_uri=video, gt_uri=gt))
    page, shown = render_page(Comparison([synced, off]), Storage(), max_clips=0)
    assert shown == 2
    header = page[page.index('<table class="clips">') :].split("</tr>")[0]
    colours = re.findall(r'class="swatch" style="background:(#[0-9a-f]{6})"', header)
    assert len(set(colours)) == 3  # ground truth, synced, off

    strips = re.findall(r'<tr class="curves">.*?</tr>', page)
    assert len(strips) == 2 and page.count("<svg") == 2
    half_interval = 0.5 / 6
    for strip, name in zip(strips, sounds):
        ticks = [
            (float(x), float(t)) for x, t in re.findall(r'<text x="([\d.]+)"[^>]*>([\d.]+) s</text>', strip)
        ]
        assert [t for _, t in ticks] == [0.0, 0.5, 1.0, 1.5, 2.0]
        axis = np.polyfit(*zip(*ticks), 1)  # seconds from x, as a reader of the axis would
        lines = re.findall(
            r'<polyline class="motion"[^>]*stroke="(#[0-9a-f]{6})"[^>]*points="([^"]+)"', strip
        )
        assert [c for c, _ in lines] == colours  # one line per column, coloured as its heading
        (onset,) = re.findall(r'<polygon class="onset"[^>]*points="([^"]+)"', strip)
        np.testing.assert_allclose(_peak_times(onset, axis), sounds[name], atol=0.03)
        (_, gt), (_, follows), (_, other) = lines
        np.testing.assert_allclose(_peak_times(gt, axis), sounds[name], atol=half_interval)
        np.testing.assert_allclose(_peak_times(follows, axis), sounds[name], atol=half_interval)
        np.testing.assert_allclose(_peak_times(other, axis), elsewhere[name], atol=half_interval)
