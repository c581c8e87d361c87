"""The comparison page's text: every metric with its interval, each video column headed by its run's Sync
with its interval, and the "play all" control (its behaviour in a browser: tests/integration/test_ui_check.py)."""

from __future__ import annotations

from asva_platform.compare import ComparedRun, Comparison, headline_metric, render_page, with_interval
from asva_platform.inference.config import GenerateConfig
from asva_platform.storage import Storage
from tests.records import evaluation_record


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
