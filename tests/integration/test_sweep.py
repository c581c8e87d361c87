"""Sweeps end to end on the tiny model: real local Ray (Tune + Train V2 + DeepSpeed), the moto S3 server,
a real ``mlflow server``.

* a 4-trial train sweep with ASHA finishes, stops trials early, and lands in MLflow as one parent with 4
  nested children (distinct readable names, the right params, all FINISHED);
* a 3-point guidance sweep on the best train trial's MLflow run id logs a metric per scale and the plots;
* a guidance sweep whose driver is SIGKILLed resumes when re-run, without duplicating runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "sweeps"


@pytest.fixture(scope="module")
def tiny(s3_server, tmp_path_factory):
    """Tiny weights, a synthetic AVSync15 (train + test lists), its latent cache on S3 and tiny metric
    networks; returns the ``base.*`` overrides every sweep here starts from."""
    from asva_model.metrics.networks.tiny import save_tiny_metric_networks
    from asva_platform.preprocess.fixtures import tiny_inputs
    from asva_platform.preprocess.job import build_cache, prepare, run_sequential
    from asva_platform.schema import load_experiment
    from asva_platform.storage import Storage

    work = tmp_path_factory.mktemp("sweep-inputs")
    _, overrides = tiny_inputs(work, clips_per_class=2, max_duration=4.0, image_size=32)
    root = f"s3://{s3_server.bucket}/sweep-tests-{uuid.uuid4().hex[:8]}"
    cfg = load_experiment(REPO / "configs" / "tiny.yaml", [*overrides, f"storage.root={root}",
                                                            "preprocess.splits=[train]", "preprocess.windows_per_clip=2"])
    prep = prepare(cfg, Storage.from_config(cfg.storage))
    build_cache(prep, run_sequential)
    nets = save_tiny_metric_networks(work / "metric-nets")
    base = [f"base.{o}" for o in overrides] + [f"base.storage.root={root}", f"base.train.cache={prep.cache_id}",
                                               "base.eval.metrics.metrics=[sync, fvd]",
                                               f"base.eval.metrics.i3d_weights={nets.i3d_weights}",
                                               "base.eval.max_videos=1", "base.eval.num_inference_steps=2"]
    return {"overrides": base, "root": root, "cache_id": prep.cache_id}


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def runs_of(experiment: str) -> tuple[list, list]:
    """(parents, children) of the sweep's experiment."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("asva.sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("asva.sweep.role") == "trial"]
    return parents, children


def artifact_paths(run_id: str, folder: str) -> set[str]:
    return {a.path for a in client().list_artifacts(run_id, folder)}


@pytest.fixture(scope="module")
def train_sweep(tiny, mlflow_server, ray_cluster):
    from sweeps.spec import load_sweep
    from sweeps.tune_runner import run_sweep

    loaded = load_sweep(SWEEPS / "train_tiny.yaml", [*tiny["overrides"], "name=train-asha-test"])
    return run_sweep(loaded)


@pytest.mark.timeout(1500)
def test_train_sweep_with_asha_is_one_parent_with_four_children(train_sweep, tiny):
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
    assert sorted(c.data.params["train.lr"] for c in children) == sorted(["0.003", "0.001", "0.0003", "1e-06"])
    for c in children:
        lr = c.data.params["train.lr"]
        assert c.info.run_name.startswith(f"lr={float(lr):.4g}_t"), c.info.run_name
        assert c.info.status == "FINISHED", (c.info.run_name, c.info.status)  # ASHA-stopped ones too
        assert c.data.tags["asva.cache_id"] == tiny["cache_id"]
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
    assert parent.data.tags["asva.sweep"] == "train-asha-test" and parent.data.tags["asva.cache_id"] == tiny["cache_id"]
    assert parent.data.tags.get("mlflow.source.git.commit")
    assert parent.data.tags["asva.sweep.best_run_id"] == out["best"]["run_id"]
    assert parent.data.metrics["trials"] == 4 and parent.data.metrics["best_loss"] == pytest.approx(out["best"]["metric"])
    assert parent.data.params["search_space.train.lr.grid"] == "[0.003, 0.001, 0.0003, 1e-06]"
    assert {"plots/loss_vs_train_lr.png", "plots/loss_curves.png"} <= artifact_paths(parent.info.run_id, "plots")
    assert "sweep/train_tiny.yaml" in artifact_paths(parent.info.run_id, "sweep")
    assert "summary/trials.csv" in artifact_paths(parent.info.run_id, "summary")


@pytest.mark.timeout(1500)
def test_guidance_sweep_on_the_best_train_run_logs_a_metric_per_scale_and_plots(train_sweep, tiny):
    from sweeps.spec import load_sweep
    from sweeps.tune_runner import run_sweep

    best_run = train_sweep.best.run_id  # an MLflow run id: resolved through its checkpoint tag
    loaded = load_sweep(SWEEPS / "guidance_scale_tiny.yaml",
                        [*tiny["overrides"], "name=guidance-test", f"checkpoint={best_run}", "plot_metrics=[FVD]"])
    out = run_sweep(loaded).to_json()
    assert out["trials"] == 3 and out["failed"] == 0
    parents, children = runs_of("guidance-test")
    assert len(parents) == 1 and len(children) == 3
    scales = sorted(float(c.data.params["eval.audio_guidance_scale"]) for c in children)
    assert scales == [1.0, 4.0, 8.0]
    for c in children:
        assert c.info.status == "FINISHED" and c.data.params["eval.checkpoint"] == best_run
        assert {"eval/Sync", "eval/FVD"} <= set(c.data.metrics)
        assert c.data.tags["asva.cache_id"] == tiny["cache_id"]  # inherited from the training run
    best = max(children, key=lambda c: c.data.metrics["eval/Sync"])
    assert out["best"]["run_id"] == best.info.run_id and out["best"]["metric"] == pytest.approx(best.data.metrics["eval/Sync"])
    plots = artifact_paths(parents[0].info.run_id, "plots")
    assert {"plots/Sync_vs_eval_audio_guidance_scale.png", "plots/FVD_vs_eval_audio_guidance_scale.png"} <= plots
    check_comparison(out, children, [1.0, 4.0, 8.0])
    parent = client().get_run(out["parent_run_id"])
    assert "summary/comparison.json" in artifact_paths(parent.info.run_id, "summary")
    best_row = next(r for r in out["comparison"]["rows"] if r["value"] == out["comparison"]["best"])
    assert parent.data.metrics["best_Sync_win_rate"] == pytest.approx(best_row["win_rate"])
    assert parent.data.metrics["best_Sync_gain"] == pytest.approx(best_row["gain"])


def check_comparison(out: dict, children: list, scales: list[float]) -> None:
    """The --json comparison: one row per scale against the first, matching each child's logged metrics."""
    comp = out["comparison"]
    assert (comp["param"], comp["metric"], comp["baseline"]) == ("eval.audio_guidance_scale", "Sync", scales[0])
    assert [r["value"] for r in comp["rows"]] == scales
    assert comp["best"] == max(comp["rows"], key=lambda r: r["mean"])["value"]
    logged = {float(c.data.params["eval.audio_guidance_scale"]): c.data.metrics for c in children}
    for row in comp["rows"]:
        m = logged[row["value"]]
        assert row["mean"] == pytest.approx(m["eval/Sync"]) and row["win_rate"] == pytest.approx(m["eval/Sync_win_rate"])
        assert row["ci_low"] == pytest.approx(m["eval/Sync_ci_low"]) and row["shifted"] == pytest.approx(m["eval/Sync_shifted"])
        assert row["num_clips"] == m["eval/num_clips"] and row["gain_ci_low"] <= row["gain"] <= row["gain_ci_high"]
    assert comp["rows"][0]["gain"] == 0.0


def sweep_command(tiny, name: str) -> list[str]:
    return [sys.executable, "-m", "jobs.sweep", str(SWEEPS / "guidance_scale_tiny.yaml"), *tiny["overrides"],
            f"name={name}", "checkpoint=init", "search_space={eval.audio_guidance_scale: {grid: [1.0, 2.0, 4.0, 8.0]}}",
            "--json"]


@pytest.mark.timeout(1500)
def test_a_killed_sweep_driver_resumes_without_duplicate_runs(tiny, mlflow_server, tmp_path):
    from asva_platform.storage import Storage, join
    from sweeps.tune_runner import saved_trial_statuses

    name = "guidance-resume-test"
    sweep_uri = join(tiny["root"], "sweeps", name)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the driver starts its own local Ray
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        driver = subprocess.Popen(sweep_command(tiny, name), cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.time() + 900
        while time.time() < deadline:
            statuses = saved_trial_statuses(Storage(), sweep_uri)
            if "TERMINATED" in statuses.values():
                break
            assert driver.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("no trial finished in time:\n" + log.read_text()[-3000:])
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        # the driver's local Ray (GCS, raylet, trial workers) shares its session: end it too
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done_before = {t for t, s in statuses.items() if s == "TERMINATED"}
    assert len(done_before) < 4, "the sweep finished before the driver was killed"
    _, children_before = runs_of(name)
    finished_before = {c.data.tags["asva.sweep.trial_id"]: c for c in children_before if c.info.status == "FINISHED"}
    assert done_before <= set(finished_before)

    rerun = subprocess.run(sweep_command(tiny, name), cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    out = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert out["resumed"] is True and out["trials"] == 4
    assert "Sync vs eval.audio_guidance_scale" in rerun.stdout  # the comparison table on the console

    parents, children = runs_of(name)
    assert len(parents) == 1 and parents[0].info.run_id == out["parent_run_id"]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == 4 and len({c.data.tags["asva.sweep.trial_id"] for c in children}) == 4
    assert all(c.info.status == "FINISHED" and "eval/Sync" in c.data.metrics for c in children)
    check_comparison(out, children, [1.0, 2.0, 4.0, 8.0])  # trials kept from the first driver included
    for trial_id in done_before:  # finished trials were kept, not run again
        again = next(c for c in children if c.data.tags["asva.sweep.trial_id"] == trial_id)
        before = finished_before[trial_id]
        assert again.info.run_id == before.info.run_id and again.info.end_time == before.info.end_time
        assert len(client().get_metric_history(again.info.run_id, "eval/Sync")) == 1
