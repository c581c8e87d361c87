"""Sweeps end to end on the tiny model: real local Ray (Tune + Train V2 + DeepSpeed), the moto S3 server,
a real ``mlflow server``.

* a 4-trial train sweep with ASHA finishes, stops trials early, and lands in MLflow as one parent with 4
  nested children (distinct readable names, the right params, all FINISHED);
* a 3-point guidance sweep on the best train trial's MLflow run id logs a metric per scale and the plots.

A guidance sweep whose driver is SIGKILLed: tests/reliability/test_sweep_driver_killed.py.
"""

from __future__ import annotations

import pytest

from tests.sweep_helpers import SWEEPS, artifact_paths, check_comparison, client, runs_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def train_sweep(sweep_inputs, mlflow_server, ray_cluster):
    from sweeps.spec import load_sweep
    from sweeps.tune_runner import run_sweep

    loaded = load_sweep(SWEEPS / "train_tiny.yaml", [*sweep_inputs["overrides"], "name=train-asha-test"])
    return run_sweep(loaded)


@pytest.mark.timeout(1500)
def test_train_sweep_with_asha_is_one_parent_with_four_children(train_sweep, sweep_inputs):
    from asva_platform.storage import Storage

    out = train_sweep.to_json()
    assert out["experiment"] == "train-asha-test" and out["trials"] == 4
    assert out["stopped_early"] >= 1 and out["failed"] == 0
    assert out["best"]["params"]["train.lr"] in (3e-3, 1e-3, 3e-4, 1e-6) and out["best"]["metric"] > 0

    parents, children = runs_of("train-asha-test")
    assert len(parents) == 1 and parents[0].info.run_id == out["parent_run_id"]
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {out["parent_run_id"]}
    assert len({c.info.run_name for c in children}) == 4
    assert sorted(c.data.params["train.lr"] for c in children) == sorted(
        ["0.003", "0.001", "0.0003", "1e-06"]
    )
    for c in children:
        lr = c.data.params["train.lr"]
        assert c.info.run_name.startswith(f"lr={float(lr):.4g}_t"), c.info.run_name
        assert c.info.status == "FINISHED", (c.info.run_name, c.info.status)  # ASHA-stopped ones too
        assert c.data.tags["asva.cache_id"] == sweep_inputs["cache_id"]
        assert c.data.params["tracking.experiment"] == "train-asha-test"
        assert "config.yaml" in artifact_paths(c.info.run_id, "")
        steps = [m.step for m in client().get_metric_history(c.info.run_id, "loss")]
        assert steps == sorted(set(steps)) and len(steps) >= 2  # intermediate history, no step twice
        early = c.data.tags["asva.sweep.stopped_early"] == "true"
        # a stopped trial's workers may log a step past the rung before Tune's kill reaches them
        assert max(steps) < 4 if early else max(steps) == 4
        # every trial's last checkpoint is on S3 and named on its run
        assert Storage().exists(c.data.tags["asva.checkpoint_uri"] + "/trainer_state.json")
    assert sum(c.data.tags["asva.sweep.stopped_early"] == "true" for c in children) == out["stopped_early"]

    parent = parents[0]
    assert (
        parent.data.tags["asva.sweep"] == "train-asha-test"
        and parent.data.tags["asva.cache_id"] == sweep_inputs["cache_id"]
    )
    assert parent.data.tags.get("mlflow.source.git.commit")
    assert parent.data.tags["asva.sweep.best_run_id"] == out["best"]["run_id"]
    assert parent.data.metrics["trials"] == 4 and parent.data.metrics["best_loss"] == pytest.approx(
        out["best"]["metric"]
    )
    assert parent.data.params["search_space.train.lr.grid"] == "[0.003, 0.001, 0.0003, 1e-06]"
    assert {"plots/loss_vs_train_lr.png", "plots/loss_curves.png"} <= artifact_paths(
        parent.info.run_id, "plots"
    )
    assert "sweep/train_tiny.yaml" in artifact_paths(parent.info.run_id, "sweep")
    assert "summary/trials.csv" in artifact_paths(parent.info.run_id, "summary")


@pytest.mark.timeout(1500)
def test_guidance_sweep_on_the_best_train_run_logs_a_metric_per_scale_and_plots(train_sweep, sweep_inputs):
    from sweeps.spec import load_sweep
    from sweeps.tune_runner import run_sweep

    best_run = train_sweep.best.run_id  # an MLflow run id: resolved through its checkpoint tag
    loaded = load_sweep(
        SWEEPS / "guidance_scale_tiny.yaml",
        [*sweep_inputs["overrides"], "name=guidance-test", f"checkpoint={best_run}", "plot_metrics=[FVD]"],
    )
    out = run_sweep(loaded).to_json()
    assert out["trials"] == 3 and out["failed"] == 0
    parents, children = runs_of("guidance-test")
    assert len(parents) == 1 and len(children) == 3
    scales = sorted(float(c.data.params["generate.audio_guidance_scale"]) for c in children)
    assert scales == [1.0, 4.0, 8.0]
    for c in children:
        assert c.info.status == "FINISHED" and c.data.params["eval.checkpoint"] == best_run
        assert {"eval/Sync", "eval/FVD"} <= set(c.data.metrics)
        assert c.data.tags["asva.cache_id"] == sweep_inputs["cache_id"]  # inherited from the training run
    best = max(children, key=lambda c: c.data.metrics["eval/Sync"])
    assert out["best"]["run_id"] == best.info.run_id and out["best"]["metric"] == pytest.approx(
        best.data.metrics["eval/Sync"]
    )
    plots = artifact_paths(parents[0].info.run_id, "plots")
    assert {
        "plots/Sync_vs_generate_audio_guidance_scale.png",
        "plots/FVD_vs_generate_audio_guidance_scale.png",
    } <= plots
    check_comparison(out, children, [1.0, 4.0, 8.0])
    parent = client().get_run(out["parent_run_id"])
    assert "summary/comparison.json" in artifact_paths(parent.info.run_id, "summary")
    best_row = next(r for r in out["comparison"]["rows"] if r["value"] == out["comparison"]["best"])
    assert parent.data.metrics["best_Sync_win_rate"] == pytest.approx(best_row["win_rate"])
    assert parent.data.metrics["best_Sync_gain"] == pytest.approx(best_row["gain"])


@pytest.mark.timeout(1500)
def test_a_recipe_sweep_trains_evaluates_and_pairs_each_setting_with_the_baseline(
    sweep_inputs, mlflow_server
):
    """evaluate: true (sweeps/recipe_tiny.yaml): each trial trains, then evaluates its own weights and logs the
    evaluation to its training run; ASHA (whose only rung is the last step) lets it; the parent's comparison
    pairs the sampled setting with points_to_evaluate[0] on the same clips."""
    from sweeps.spec import load_sweep
    from sweeps.tune_runner import run_sweep

    loaded = load_sweep(SWEEPS / "recipe_tiny.yaml", [*sweep_inputs["overrides"], "name=recipe-test"])
    out = run_sweep(loaded).to_json()
    assert out["trials"] == 2 and out["failed"] == 0 and out["stopped_early"] == 0
    parents, children = runs_of("recipe-test")
    assert len(parents) == 1 and len(children) == 2
    assert sorted(float(c.data.params["train.lr"]) for c in children) == [1e-3, 3e-3]
    for c in children:
        assert c.info.status == "FINISHED"
        assert {"loss", "eval/Sync", "eval/Sync_shifted"} <= set(c.data.metrics)  # trained, then evaluated
        assert any(p.startswith("eval/") for p in artifact_paths(c.info.run_id, "eval"))
    comp = out["comparison"]
    assert (comp["param"], comp["metric"], comp["baseline"]) == ("setting", "Sync", "lr=0.001")
    assert [r["value"] for r in comp["rows"]] == ["lr=0.001", "lr=0.003"]
    logged = {f"lr={float(c.data.params['train.lr']):g}": c.data.metrics for c in children}
    for row in comp["rows"]:
        assert row["mean"] == pytest.approx(logged[row["value"]]["eval/Sync"])
        assert row["num_clips"] == logged[row["value"]]["eval/num_clips"]
    assert comp["rows"][0]["gain"] == 0.0 and comp["rows"][1]["gain"] == pytest.approx(
        comp["rows"][1]["mean"] - comp["rows"][0]["mean"]
    )
    parent = client().get_run(out["parent_run_id"])
    assert "summary/comparison.json" in artifact_paths(parent.info.run_id, "summary")
    assert parent.data.metrics["best_Sync_mean"] == pytest.approx(max(r["mean"] for r in comp["rows"]))
