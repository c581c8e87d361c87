"""The training run's MLflow bookkeeping on a real (sqlite) store: find-or-create by run key, and no step
logged twice after a restart."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from asva_platform.experiment import load_experiment
from asva_platform.tracking import TAG_CACHE_ID, LoggedConfig
from asva_platform.training import run_tracking
from asva_platform.training.job import describe_training
from asva_platform.training.run_tracking import StepLogger

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def open_training_run(uri, experiment, run_uri, name, tags):
    """As the training job opens its run: the experiment's logged config and description."""
    return run_tracking.open_training_run(
        uri,
        experiment.tracking.experiment,
        LoggedConfig.of(experiment),
        run_uri,
        name,
        tags,
        describe_training(experiment, run_uri, tags.get(TAG_CACHE_ID, "")),
    )


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


def test_experiments_open_on_the_runs_table_and_runs_say_what_they_are(tmp_path):
    from asva_platform.evaluation.job import describe_evaluation
    from asva_platform.tracking import (
        EXPERIMENT_KIND,
        TAG_EXPERIMENT_KIND,
        TAG_NOTE,
        get_or_create_experiment,
    )
    from sweeps.report import describe_sweep
    from sweeps.spec import load_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment(
        "made-before"
    )  # an experiment from before: MLflow 3's GenAI kind by default
    assert get_or_create_experiment(client, "made-before", "sweep") == old
    tags = client.get_experiment(old).tags
    assert tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND and "parent run" in tags[TAG_NOTE]
    client.set_experiment_tag(old, TAG_NOTE, "the user's own words")
    get_or_create_experiment(client, "made-before", "train")
    assert client.get_experiment(old).tags[TAG_NOTE] == "the user's own words"  # never overwritten

    cfg = load_experiment(CONFIGS / "tiny.yaml", ["train.cache=abc123", "train.min_workers=1"])
    run_id, _ = open_training_run(uri, cfg, "s3://b/runs/tiny", "tiny", {"asva.cache_id": "abc123"})
    exp = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert (
        exp.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND and "one run per training name" in exp.tags[TAG_NOTE]
    )
    note = client.get_run(run_id).data.tags[TAG_NOTE]
    assert note.startswith(
        "**tiny** recipe (authors protocol): 20 steps of 4 clips (2 x 1 accumulation x 1-2 workers)"
    )
    assert (
        "the latent cache `abc123`" in note
        and "`s3://b/runs/tiny`" in note
        and "s3://b/runs/tiny/export/unet" in note
    )

    spec = load_sweep(
        Path(__file__).resolve().parents[2] / "sweeps" / "guidance_scale_tiny.yaml",
        ["checkpoint=s3://b/runs/tiny"],
    ).spec
    text = describe_sweep(spec, "trial-2", 0.61234)
    assert text.startswith(
        "**guidance sweep** `guidance-scale-tiny`, on checkpoint `s3://b/runs/tiny`: max `Sync`"
    )
    assert (
        "`generate.audio_guidance_scale` grid [1.0, 4.0, 8.0]" in text
        and "best trial: **trial-2** (Sync 0.6123)" in text
    )
    evaluation = describe_evaluation(cfg, "s3://b/runs/tiny/step_00000020", "tiny-s20")
    assert "under the **authors** protocol: sync on 4 test videos, audio guidance 4" in evaluation
    assert "`eval/tiny-s20/per_class.json`" in evaluation


def test_the_progress_line_says_where_how_fast_and_when_done():
    from asva_platform.progress import duration, progress_line

    line = progress_line("step", 120, 2000, 0.5, "1.9 samples/s", loss=0.41234)
    assert line == "step 120/2000 (6%) loss 0.4123 1.9 samples/s eta 16m"  # 1880 steps x 0.5 s
    assert [duration(s) for s in (42, 960, 7500, float("nan"))] == ["42s", "16m", "2h05m", "?"]
    assert progress_line("clip", 3, 3, 2.0) == "clip 3/3 (100%) eta 0s"


def test_links_go_to_the_runs_table_a_run_or_an_artifact():
    from asva_platform.tracking import ui_url

    base = "http://127.0.0.1:5100/"
    mode = "?workflowType=machine_learning"  # MLflow 3's model-training mode, not its GenAI one
    assert ui_url(base, "3") == f"http://127.0.0.1:5100/#/experiments/3/runs{mode}"
    assert ui_url(base, "3", "abc") == f"http://127.0.0.1:5100/#/experiments/3/runs/abc{mode}"
    assert ui_url(base, "3", "abc", "eval/x/per_class.json") == (
        f"http://127.0.0.1:5100/#/experiments/3/runs/abc/artifactPath/eval/x/per_class.json{mode}"
    )
    assert ui_url("sqlite:///tmp/mlflow.db", "3", "abc") == ""  # no UI serves a local file store


def test_a_sample_is_logged_as_a_frame_strip_at_its_step(tmp_path):
    import numpy as np

    from asva_model.video_io import frame_strip

    frames = np.zeros((12, 8, 10, 3), np.float32)
    for i in range(12):
        frames[i] = i / 11  # each frame its own grey level
    strip = frame_strip(frames)
    assert strip.shape == (8, 30, 3) and strip.dtype == np.uint8
    assert [int(strip[0, x, 0]) for x in (0, 10, 20)] == [0, round(6 / 11 * 255), 255]  # frames 0, 6 and 11

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(
        client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    ).info.run_id
    logger = StepLogger(uri, run_id)
    for step in (4, 8):
        logger.log_image(strip, "samples/dog-1", step)
    pngs = sorted(a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png"))
    assert [p.split("+step+")[1].split("+")[0] for p in pngs] == ["4", "8"]


def test_progress_counts_from_the_average_time_per_item():
    from asva_platform.progress import Progress

    now = [100.0]
    progress = Progress("video", 10, clock=lambda: now[0])
    now[0] = 112.0  # 3 videos in 12 s: 4 s each, 7 left
    assert progress.line(3) == "video 3/10 (30%) 0.25 video/s eta 28s"
    assert progress.line(0) == "video 0/10 (0%) eta ?"


def test_a_progress_line_reaches_the_console_once_inside_a_train_worker(capfd, monkeypatch):
    """Ray Train patches print in its workers: to its logger (whose console handler prints) and, when stdout is
    wrapped, to stdout as well, so every printed line showed twice on the driver. ``console`` writes once."""
    import builtins
    import io
    import logging
    import sys

    from ray.train.v2._internal.logging.patch_print import redirected_print

    from asva_platform.progress import console

    handler = logging.StreamHandler(sys.__stderr__)  # Ray's worker "console" handler on the root logger
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(root, "level", logging.INFO)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True))
    monkeypatch.setattr(builtins, "print", redirected_print)
    try:
        print("printed line")
        console("console line")
    finally:
        root.removeHandler(handler)
    out, err = capfd.readouterr()
    assert (out + err).count("printed line") == 2  # the failure this guards against
    assert (out + err).count("console line") == 1


def test_the_silenced_ray_logger_is_the_one_that_dumps_every_report():
    import importlib
    import inspect
    import logging

    from asva_platform.training.loop import RAY_REPORT_MODULE, quiet_ray_report_log

    module = importlib.import_module(RAY_REPORT_MODULE)
    assert 'logger.info(\n                f"Reporting training result' in inspect.getsource(
        module
    )  # a Ray upgrade moving it fails here
    root, saved = logging.getLogger(), (logging.getLogger().level, module.logger.level)
    try:
        root.setLevel(logging.INFO)  # as Ray configures a train worker
        module.logger.setLevel(logging.NOTSET)
        assert module.logger.isEnabledFor(logging.INFO)
        quiet_ray_report_log()
        assert not module.logger.isEnabledFor(logging.INFO) and module.logger.isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        module.logger.setLevel(saved[1])
