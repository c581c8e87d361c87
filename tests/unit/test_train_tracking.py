"""The training run's MLflow bookkeeping on a real (sqlite) store: find-or-create by run key, and no step
logged twice after a restart."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from asva_platform.experiment import load_experiment
from asva_platform.training.run_tracking import StepLogger, open_training_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_same_run_key_reopens_the_run_and_records_changed_params(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_experiment(CONFIGS / "tiny.yaml")
    run_id, resumed = open_training_run(uri, cfg, "s3://b/runs/tiny", "tiny", {"asva.world_size": "2"})
    assert not resumed
    other, _ = open_training_run(uri, cfg, "s3://b/runs/other", "other", {})
    assert other != run_id

    client = MlflowClient(tracking_uri=uri)
    client.set_terminated(run_id, "FAILED")  # e.g. the driver died
    longer = load_experiment(CONFIGS / "tiny.yaml", ["train.max_steps=40"])
    again, resumed = open_training_run(uri, longer, "s3://b/runs/tiny", "tiny", {"asva.world_size": "2"})
    assert (again, resumed) == (run_id, True)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.params["train.max_steps"] == "20"  # params are immutable; the change is recorded
    assert run.data.tags["asva.resume_1.changed"] == "train.max_steps"
    assert run.data.tags["asva.resumes"] == "1"
    assert "config-resume-1.yaml" in [a.path for a in client.list_artifacts(run_id)]


def test_a_restarted_logger_skips_steps_already_logged(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id

    first = StepLogger(uri, run_id)
    for step in (1, 2, 3):
        assert first.log("train", step, {"loss": 1.0 / step})
    assert first.log("val", 3, {"val_loss": 0.5})  # another group may log the same step

    # a worker restarted from the step-1 checkpoint replays steps 2 and 3, then continues
    second = StepLogger(uri, run_id)
    assert second.logged_up_to("train") == 3 and second.logged_up_to("val") == 3
    assert not second.log("train", 2, {"loss": 9.0})
    assert not second.log("train", 3, {"loss": 9.0})
    assert second.log("train", 4, {"loss": 0.2})
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert sorted(history) == [(1, 1.0), (2, 0.5), (3, 1.0 / 3), (4, 0.2)]
