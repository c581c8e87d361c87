"""A guidance sweep's paired comparison on Sync, its plot and its summary on the parent run, from per-clip
scores written the way the evaluation writes them (no cluster: local storage, a sqlite MLflow store)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import numpy as np
import pytest
from scipy import stats as sps

from asva_model.metrics.catalogue import reported_keys
from asva_model.metrics.compute import ClipScores, summarize
from asva_model.metrics.stats import bootstrap_mean_interval
from asva_platform.storage import Storage
from sweeps.comparison import PICTURE_KEYS, compare_trials
from sweeps.report import TrialRow, log_summary, write_plots
from sweeps.spec import load_sweep
from sweeps.tune_runner import SweepResult, collect_rows

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
GRID = "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0, 8.0, 12.0]}}"
CLIPS = ["a_clip-00", "a_clip-01", "b_clip-00", "b_clip-01", "c_clip-00"]
BASE = np.array([0.10, 0.40, 0.20, 0.05, 0.30])


def guidance_spec(*overrides):
    return load_sweep(SWEEPS / "guidance_scale_tiny.yaml", ["checkpoint=init", GRID, *overrides]).spec


def evaluated(
    tmp_path: Path,
    scale: float,
    sync: np.ndarray,
    shifted: np.ndarray,
    order=None,
    status: str = "finished",
    index: int = 0,
    seed: int | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> TrialRow:
    """A trial row whose evaluation wrote scores.npz as asva_platform.evaluation.runner does (clips in ``order``;
    a clip's class is its name's prefix)."""
    order = list(range(len(CLIPS))) if order is None else order
    arrays = {
        "sync": sync[order],
        "sync_shifted": shifted[order],
        "sync_gt": np.full(len(order), 0.8),
        "sync_lag_s": np.zeros(len(order)),
        **{key: value[order] for key, value in (extra or {}).items()},
    }
    uri = tmp_path / f"eval-{scale:g}-{seed}"
    uri.mkdir()
    names = np.asarray(CLIPS)[order]
    np.savez(
        uri / "scores.npz",
        **arrays,
        clip_names=names,
        clip_classes=np.asarray([n.split("_")[0] for n in names]),
    )
    metrics = summarize(ClipScores(arrays), ["sync"])
    params = {"generate.audio_guidance_scale": scale, **({} if seed is None else {"generate.seed": seed})}
    return TrialRow(
        f"x_{index:05d}",
        f"audio_guidance_scale={scale:g}_t{index}",
        params,
        status,
        metrics,
        f"run{index}",
        eval_uri=str(uri),
    )


@pytest.fixture
def rows(tmp_path) -> list[TrialRow]:
    rng = np.random.default_rng(0)
    better = BASE + np.array([0.12, 0.08, 0.15, 0.10, 0.11])  # better on every clip
    return [  # not in grid order, and one trial's clips in another order: pairing goes by name
        evaluated(tmp_path, 4.0, better, rng.uniform(-0.1, 0.1, 5), index=1),
        evaluated(tmp_path, 1.0, BASE, BASE + 0.01, index=0),
        evaluated(tmp_path, 8.0, BASE - 0.02, rng.uniform(-0.1, 0.1, 5), order=[4, 2, 0, 3, 1], index=2),
        evaluated(tmp_path, 12.0, BASE, BASE, status="failed", index=3),
    ]


def test_every_trial_is_paired_with_the_baseline_on_the_same_clips(rows):
    comp = compare_trials(rows, guidance_spec(), Storage())
    assert (comp.param, comp.metric, comp.baseline, comp.best) == (
        "generate.audio_guidance_scale",
        "Sync",
        1.0,
        4.0,
    )
    assert [r["value"] for r in comp.rows] == [1.0, 4.0, 8.0]  # grid order; the failed trial left out
    base, four, eight = comp.rows
    assert base["gain"] == base["gain_ci_low"] == base["gain_ci_high"] == 0.0
    ref = sps.ttest_rel(BASE + np.array([0.12, 0.08, 0.15, 0.10, 0.11]), BASE).confidence_interval()
    assert four["gain"] == pytest.approx(0.112) and (
        four["gain_ci_low"],
        four["gain_ci_high"],
    ) == pytest.approx((ref.low, ref.high))
    assert four["gain_ci_low"] > 0  # better on every clip: the paired interval excludes 0 ...
    assert four["ci_low"] < base["ci_high"]  # ... although the two means' own intervals overlap
    # 8.0 stored its clips in another order: matched by name, a constant -0.02 per clip
    assert (eight["gain"], eight["gain_ci_low"], eight["gain_ci_high"]) == pytest.approx(
        (-0.02, -0.02, -0.02)
    )
    by_value = {r.params["generate.audio_guidance_scale"]: r.metrics for r in rows}
    for row in comp.rows:
        m = by_value[row["value"]]
        assert (row["mean"], row["ci_low"], row["ci_high"], row["shifted"], row["gt"]) == (
            m["Sync"],
            m["Sync_ci_low"],
            m["Sync_ci_high"],
            m["Sync_shifted"],
            m["Sync_gt"],
        )
        assert (row["win_rate"], row["win_rate_ci_low"], row["win_rate_ci_high"]) == (
            m["Sync_win_rate"],
            m["Sync_win_rate_ci_low"],
            m["Sync_win_rate_ci_high"],
        )
        assert row["num_clips"] == 5 and row["seeds"] == 1
        boot = bootstrap_mean_interval(
            [BASE, BASE + np.array([0.12, 0.08, 0.15, 0.10, 0.11]), BASE - 0.02][
                [1.0, 4.0, 8.0].index(row["value"])
            ]
        )
        assert (row["boot_ci_low"], row["boot_ci_high"]) == pytest.approx((boot.low, boot.high))
    assert base["win_rate"] == 0.0 and four["win_rate"] == 1.0  # BASE lost to BASE + 0.01 on every clip
    assert comp.parent_metrics() == {
        "best_Sync_mean": four["mean"],
        "best_Sync_boot_ci_low": four["boot_ci_low"],
        "best_Sync_boot_ci_high": four["boot_ci_high"],
        "best_Sync_gain": four["gain"],
        "best_Sync_gain_ci_low": four["gain_ci_low"],
        "best_Sync_gain_ci_high": four["gain_ci_high"],
        "best_Sync_win_rate": 1.0,
    }
    out = comp.to_json()
    assert set(out) == {
        "param",
        "metric",
        "baseline",
        "best",
        "rows",
        "per_class",
        "lags",
        "provenance",
        "incomparable",
    }
    assert out["lags"]["4.0"] == {"generated": {"0": 5}}  # these evaluations kept no GT lags
    assert tuple(out["rows"][0]) == (
        "value",
        "seeds",
        "num_clips",
        "mean",
        "boot_ci_low",
        "boot_ci_high",
        "ci_low",
        "ci_high",
        "shifted",
        "win_rate",
        "win_rate_ci_low",
        "win_rate_ci_high",
        "gt",
        "gain",
        "gain_ci_low",
        "gain_ci_high",
        *PICTURE_KEYS,
    )
    assert out["rows"][0]["frame0_psnr"] is None  # no picture metric in these evaluations
    # per class (a, b, c): 4.0 is every class's best; 8.0 (-0.02 on every clip) every class's worst
    assert [(c["class"], c["clips"], c["best"], c["worst"]) for c in out["per_class"]] == [
        ("a", 2, 4.0, 8.0),
        ("b", 2, 4.0, 8.0),
        ("c", 1, 4.0, 8.0),
    ]
    assert out["per_class"][0]["Sync@1.0"] == pytest.approx(BASE[:2].mean())
    json.dumps(out, allow_nan=False)


@pytest.fixture
def seeded(tmp_path) -> tuple[list[TrialRow], dict[float, np.ndarray]]:
    """Two scales x three seeds; scale 4 beats 1 on class a only, and its seeds vary more."""
    rng = np.random.default_rng(1)
    tables = {
        1.0: BASE[:, None] + rng.normal(0, 0.01, (5, 3)),
        4.0: BASE[:, None] + np.array([0.3, 0.3, -0.1, -0.1, -0.1])[:, None] + rng.normal(0, 0.05, (5, 3)),
    }
    rows, index = [], 0
    for scale, table in tables.items():
        for seed in range(3):
            rows.append(
                evaluated(tmp_path, scale, table[:, seed], table[:, seed] - 0.05, index=index, seed=seed)
            )
            index += 1
    return rows[::-1], tables  # trials arrive in any order


def test_seeds_of_a_setting_are_grouped_into_one_row(seeded):
    rows, tables = seeded
    spec = guidance_spec(
        "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}}", "seeds=[0, 1, 2]"
    )
    comp = compare_trials(rows, spec, Storage())
    assert [(r["value"], r["seeds"], r["num_clips"]) for r in comp.rows] == [(1.0, 3, 5), (4.0, 3, 5)]
    for row in comp.rows:
        table = tables[row["value"]]
        boot = bootstrap_mean_interval(table)
        assert row["mean"] == pytest.approx(table.mean())
        assert (row["boot_ci_low"], row["boot_ci_high"]) == pytest.approx((boot.low, boot.high))
        assert row["boot_ci_low"] < row["mean"] < row["boot_ci_high"]
        assert row["shifted"] == pytest.approx(table.mean() - 0.05) and row["win_rate"] == 1.0
    gain = tables[4.0].mean(axis=1) - tables[1.0].mean(axis=1)  # paired per clip, each over its seeds
    four = comp.rows[1]
    ref = sps.ttest_1samp(gain, 0.0).confidence_interval()
    assert four["gain"] == pytest.approx(gain.mean()) and (
        four["gain_ci_low"],
        four["gain_ci_high"],
    ) == pytest.approx((ref.low, ref.high))
    assert [(c["class"], c["best"], c["worst"]) for c in comp.per_class] == [
        ("a", 4.0, 1.0),
        ("b", 1.0, 4.0),
        ("c", 1.0, 4.0),
    ]
    assert comp.per_class[0]["clips"] == 2 and comp.per_class[0]["Sync@4.0"] == pytest.approx(
        tables[4.0][:2].mean()
    )
    lines = comp.table()
    assert "bootstrap 95% CI over clips x 3 seeds" in lines[0] and lines[2].rstrip().endswith("5 x 3")
    assert (
        lines[-1]
        == "  per class, best / worst generate.audio_guidance_scale: a 4.0 / 1.0; b 1.0 / 4.0; c 1.0 / 4.0"
    )


def test_the_seeded_plot_draws_settings_with_bootstrap_bars_seeds_and_dashed_references(
    seeded, tmp_path, monkeypatch
):
    rows, _ = seeded
    spec = guidance_spec(
        "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}}", "seeds=[0, 1, 2]"
    )
    comp = compare_trials(rows, spec, Storage())
    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def capture(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        legend = ax.get_legend()
        drawn[Path(path).name] = sorted(t.get_text() for t in legend.get_texts()) if legend else []
        if Path(path).name.startswith("Sync_vs"):
            drawn["lines"] = [
                (line.get_label(), line.get_linestyle(), list(line.get_ydata())) for line in ax.get_lines()
            ]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    paths = write_plots(rows, spec, tmp_path, comp)
    assert [p.name for p in paths] == [
        "Sync_vs_generate_audio_guidance_scale.png",
        "SyncLag_s_vs_generate_audio_guidance_scale.png",
    ]
    assert drawn["SyncLag_s_vs_generate_audio_guidance_scale.png"] == []
    assert drawn["Sync_vs_generate_audio_guidance_scale.png"] == [
        "95% CI (bootstrap)",
        "Sync (mean over clips x 3 seeds)",
        "Sync_gt (ground truth)",
        "Sync_shifted (audio shifted)",
        "one seed",
    ]
    lines = {label: (style, ys) for label, style, ys in drawn["lines"]}
    assert lines["Sync (mean over clips x 3 seeds)"][1] == pytest.approx([r["mean"] for r in comp.rows])
    assert lines["Sync_gt (ground truth)"][0] == lines["Sync_shifted (audio shifted)"][0] == "--"
    assert len(lines["one seed"][1]) == 6


def test_seeded_summary_tables_on_the_parent_run(seeded, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    rows, _ = seeded
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "db").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path}/db/mlflow.db")
    exp = client.create_experiment("cmp", artifact_location=(tmp_path / "db" / "artifacts").as_uri())
    parent = client.create_run(exp).info.run_id
    spec = guidance_spec(
        "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}}", "seeds=[0, 1, 2]"
    )
    comp = compare_trials(rows, spec, Storage())
    log_summary(client, parent, spec, rows, comp)

    def csv_rows(name):
        text = Path(client.download_artifacts(parent, name, str(tmp_path))).read_text().splitlines()
        return [dict(zip(text[0].split(","), line.split(","))) for line in text[1:]]

    trials = csv_rows("summary/trials.csv")
    assert len(trials) == 6 and {t["generate.seed"] for t in trials} == {"0", "1", "2"}
    for t in trials:
        setting = next(r for r in comp.rows if r["value"] == float(t["generate.audio_guidance_scale"]))
        assert float(t["Sync_boot_ci_low"]) == pytest.approx(setting["boot_ci_low"])
        assert float(t["Sync_boot_ci_high"]) == pytest.approx(setting["boot_ci_high"])
    settings = csv_rows("summary/settings.csv")
    assert [(s["value"], s["seeds"]) for s in settings] == [("1.0", "3"), ("4.0", "3")]
    assert [(c["class"], c["best"], c["worst"]) for c in csv_rows("summary/per_class.csv")] == [
        ("a", "4.0", "1.0"),
        ("b", "1.0", "4.0"),
        ("c", "1.0", "4.0"),
    ]
    paths = {a.path for a in client.list_artifacts(parent, "summary")}
    assert {"summary/settings.json", "summary/per_class.json", "summary/trials.json"} <= paths
    metrics = client.get_run(parent).data.metrics
    assert metrics["best_Sync_mean"] == pytest.approx(comp.best_row()["mean"])


def test_picture_and_lags_pool_over_every_seed_of_a_setting(tmp_path):
    """frame 0 PSNR (mean, worst), colour drift / error per channel and the lead over the GT's lag come from
    the clips x seeds of each setting, and the lag histogram counts both sides."""
    rng = np.random.default_rng(3)
    spec = guidance_spec("search_space={generate.audio_guidance_scale: {grid: [1.0]}}", "seeds=[0, 1]")
    pooled: dict[str, list[np.ndarray]] = {}
    rows = []
    for seed in (0, 1):
        extra = {
            "frame0_psnr": rng.uniform(25, 35, len(CLIPS)),
            "colour_drift": rng.normal(0, 2, (len(CLIPS), 3)),
            "colour_error": rng.normal(0, 2, (len(CLIPS), 3)),
            "sync_lag_gt_s": np.where(np.arange(len(CLIPS)) < 2, -0.08, 0.0),
        }
        extra["sync_lag_s"] = extra["sync_lag_gt_s"] - 0.08 * seed  # seed 1 leads its GT by one frame
        for key, value in extra.items():
            pooled.setdefault(key, []).append(value)
        row = evaluated(tmp_path, 1.0, BASE, BASE - 0.1, index=seed, seed=seed, extra=extra)
        rows.append(row)
    arrays = {key: np.concatenate(parts) for key, parts in pooled.items()}
    row = compare_trials(rows, spec, Storage()).rows[0]
    assert row["frame0_psnr"] == pytest.approx(arrays["frame0_psnr"].mean())
    assert row["frame0_psnr_min"] == pytest.approx(arrays["frame0_psnr"].min())
    drift, error = arrays["colour_drift"].mean(axis=0), arrays["colour_error"].mean(axis=0)
    assert [row[f"colour_drift_{c}"] for c in "RGB"] == pytest.approx(drift.tolist())
    assert [row[f"colour_error_{c}"] for c in "RGB"] == pytest.approx(error.tolist())
    assert row["lead_s"] == pytest.approx(-0.04)  # half the clips x seeds one frame (0.08 s) early
    lags = compare_trials(rows, spec, Storage()).lags["1.0"]
    assert lags == {"generated": {"-0.16": 2, "-0.08": 5, "0": 3}, "gt": {"-0.08": 4, "0": 6}}


def test_the_console_table_marks_the_best_value(rows):
    lines = compare_trials(rows, guidance_spec(), Storage()).table()
    assert lines[0].startswith("Sync vs generate.audio_guidance_scale") and "gain vs 1.0 [95% CI]" in lines[1]
    four = next(line for line in lines if line.strip().startswith("4.0"))
    assert four.strip().startswith("4.0 *") and "+0.112 [+0." in four and four.rstrip().endswith(" 5 x 1")
    assert not any(line.strip().startswith("8.0 *") for line in lines)
    assert "ground truth Sync 0.800" in lines[-2] and lines[-1].startswith("  per class, best / worst")


def test_without_baseline_scores_the_gain_is_unknown_and_other_sweeps_get_no_comparison(rows):
    rows[1].eval_uri = ""  # e.g. a trial finished before trials reported their eval URI
    comp = compare_trials(rows, guidance_spec(), Storage())
    assert all(r["gain"] is None for r in comp.rows) and comp.rows[1]["mean"] is not None
    assert (
        "best_Sync_gain" not in comp.parent_metrics() and comp.parent_metrics()["best_Sync_win_rate"] == 1.0
    )
    assert "-" in comp.table()[3].split()
    assert compare_trials(rows, load_sweep(SWEEPS / "train_tiny.yaml").spec, Storage()) is None
    two = guidance_spec(
        "search_space={generate.audio_guidance_scale: {grid: [1.0]}, generate.num_inference_steps: {grid: [2, 3]}}"
    )
    assert compare_trials(rows, two, Storage()) is None
    ranged = guidance_spec(
        "search=random", "search_space={generate.audio_guidance_scale: {uniform: [1.0, 8.0]}}"
    )
    assert compare_trials(rows, ranged, Storage()) is None
    assert compare_trials([r for r in rows if r.status == "failed"], guidance_spec(), Storage()) is None


def test_the_sync_plot_shows_intervals_the_ground_truth_and_the_shifted_control(rows, tmp_path, monkeypatch):
    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def capture(fig, path, *args, **kwargs):
        legend = fig.axes[0].get_legend()
        drawn[Path(path).name] = sorted(t.get_text() for t in legend.get_texts()) if legend else []
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    spec = guidance_spec()
    paths = write_plots(rows, spec, tmp_path, compare_trials(rows, spec, Storage()))
    assert [p.name for p in paths] == [
        "Sync_vs_generate_audio_guidance_scale.png",
        "SyncLag_s_vs_generate_audio_guidance_scale.png",
    ]
    assert drawn["Sync_vs_generate_audio_guidance_scale.png"] == [
        "95% CI (bootstrap)",
        "Sync (mean over clips x 1 seed)",
        "Sync_gt (ground truth)",
        "Sync_shifted (audio shifted)",
    ]
    assert (
        drawn["SyncLag_s_vs_generate_audio_guidance_scale.png"] == []
    )  # nothing qualifies SyncLag_s: no legend
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_the_parent_run_gets_the_comparison_and_the_best_gain(rows, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "db").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path}/db/mlflow.db")
    exp = client.create_experiment("cmp", artifact_location=(tmp_path / "db" / "artifacts").as_uri())
    parent = client.create_run(exp).info.run_id
    spec = guidance_spec()
    comp = compare_trials(rows, spec, Storage())
    best = log_summary(client, parent, spec, rows, comp)
    assert best.params["generate.audio_guidance_scale"] == 4.0
    metrics = client.get_run(parent).data.metrics
    assert metrics["best_Sync_gain"] == pytest.approx(0.112) and metrics["best_Sync_win_rate"] == 1.0
    assert metrics["best_Sync_gain_ci_low"] > 0
    logged = json.loads(
        Path(client.download_artifacts(parent, "summary/comparison.json", str(tmp_path))).read_text()
    )
    assert logged == json.loads(json.dumps(comp.to_json()))
    header = (
        Path(client.download_artifacts(parent, "summary/trials.csv", str(tmp_path)))
        .read_text()
        .splitlines()[0]
    )
    assert header.split(",")[3:12] == [
        "Sync",
        "Sync_ci_low",
        "Sync_ci_high",
        "Sync_shifted",
        "Sync_win_rate",
        "Sync_win_rate_ci_low",
        "Sync_win_rate_ci_high",
        "Sync_gt",
        "SyncLag_s",
    ]


def test_trials_hand_their_eval_uri_to_the_driver_and_the_json_result_carries_the_comparison(rows):
    spec = guidance_spec()
    results = [
        SimpleNamespace(
            metrics={**r.metrics, "trial_id": r.trial_id, "eval_uri": r.eval_uri},
            config=dict(r.params),
            error=None,
            path=f"/x/trial_{r.trial_id}",
            metrics_dataframe=None,
        )
        for r in rows
        if r.status != "failed"
    ]
    collected = collect_rows(results, spec, None, {}, "")
    assert [r.eval_uri for r in collected] == [r.eval_uri for r in rows if r.status != "failed"]
    comp = compare_trials(collected, spec, Storage())
    assert comp.to_json() == compare_trials(rows, spec, Storage()).to_json()
    out = SweepResult("s", "1", "p", "u", "Sync", collected, None, False, comparison=comp).to_json()
    assert out["comparison"]["best"] == 4.0 and len(out["comparison"]["rows"]) == 3
    assert SweepResult("s", "1", "p", "u", "Sync", collected, None, False).to_json()["comparison"] is None


def test_every_sync_key_the_evaluation_reports_is_usable_as_a_sweep_metric():
    scores = ClipScores(
        {k: np.zeros(2) for k in ("sync", "sync_shifted", "sync_gt", "sync_lag_s", "sync_lag_gt_s")}
    )
    assert set(reported_keys(["sync"])) == set(summarize(scores, ["sync"])) - {"num_clips"}
    assert guidance_spec("metric=Sync_win_rate", "mode=").mode == "max"
    assert guidance_spec("metric=Sync_ci_low", "mode=").mode == "max"


def test_a_train_sweep_that_evaluates_pairs_each_setting_with_the_first_point(tmp_path):
    """evaluate: true: one row per trained setting, named by its swept values; the baseline is
    points_to_evaluate[0] wherever it ran; a trial ASHA stopped (no evaluation) has no row."""
    spec = load_sweep(SWEEPS / "toy_recipe.yaml").spec

    def trained(index, lr, drop, sync, status="finished"):
        row = evaluated(tmp_path, lr * 1000, sync, sync - 0.2, index=index)
        return dataclasses.replace(
            row,
            params={"train.lr": lr, "model.audio_cond_drop_prob": drop, "train.weight_decay": 0.0},
            status=status,
            metrics={**row.metrics, "val_loss_gap_t": 5.0},
        )

    better = BASE + 0.1
    rows = [
        trained(0, 2e-3, 0.1, better),
        trained(1, 1e-3, 0.2, BASE),  # the recipe, points_to_evaluate[0], ran second
        dataclasses.replace(trained(2, 3e-4, 0.3, BASE), status="stopped_early", metrics={"loss": 1.0}),
    ]
    comp = compare_trials(rows, spec, Storage())
    recipe = "audio_cond_drop_prob=0.2,lr=0.001,weight_decay=0"
    assert (comp.param, comp.baseline) == ("setting", recipe)
    assert [r["value"] for r in comp.rows] == [recipe, "audio_cond_drop_prob=0.1,lr=0.002,weight_decay=0"]
    assert comp.best == comp.rows[1]["value"]
    assert comp.rows[1]["gain"] == pytest.approx(0.1) and comp.rows[1]["gain_ci_low"] == pytest.approx(0.1)
    assert comp.rows[0]["gain"] == 0.0
