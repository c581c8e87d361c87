"""Sweep pieces that need no cluster: run names, the objective defaults, early-stop detection, the summary
table and plots, and the parent run's settings pinning (a real MLflow sqlite store and local storage)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from asva_platform.config import ConfigError
from asva_platform.errors import UserError
from sweeps.mlflow_sweep import stopped_early, trial_index, trial_run_name
from sweeps.report import TrialRow, best_row, table_columns, table_rows, to_csv, write_plots
from sweeps.spec import load_sweep
from tests.output import own_lines

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def test_run_names_are_readable_distinct_and_storage_safe():
    assert trial_run_name({"train.lr": 0.0003}, "ab12c_00002") == "lr=0.0003_t2"
    two = trial_run_name({"train.lr": 1e-4, "model.audio_cond_drop_prob": 0.1}, "x_00000")
    assert two == "audio_cond_drop_prob=0.1,lr=0.0001_t0"
    # the same values drawn twice still give two names
    assert trial_run_name({"train.lr": 1e-4}, "x_00000") != trial_run_name({"train.lr": 1e-4}, "x_00001")
    # colliding leaf names keep their full key
    assert trial_run_name({"a.seed": 1, "b.seed": 2}, "x_00003") == "a.seed=1,b.seed=2_t3"
    assert not set("/ #") & set(trial_run_name({"dataset.root": "s3://b/x y"}, "x_00001"))
    assert trial_index("ab12c_00017") == 17


def test_objective_defaults_follow_the_kind_and_the_metric_direction(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\n")
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nkind: guidance\nbase_config: base.yaml\ncheckpoint: init\n"
        "search_space:\n  generate.audio_guidance_scale: {grid: [1.0]}\n"
    )
    assert (load_sweep(path).spec.metric, load_sweep(path).spec.mode) == ("AlignSync", "max")
    only_sync = load_sweep(path, ["base.eval.metrics.metrics=[sync, fvd]"]).spec
    assert (only_sync.metric, only_sync.mode) == ("Sync", "max")
    fvd = load_sweep(path, ["base.eval.metrics.metrics=[fvd]", "metric=FVD"]).spec
    assert fvd.mode == "min"
    train = load_sweep(SWEEPS / "train_tiny.yaml", ["metric=", "mode="]).spec
    assert (train.metric, train.mode) == ("loss", "min")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["metric=FVD"], "metric: FVD is not reported by every guidance trial"),
        (["plot_metrics=[FID]"], "plot_metrics: FID is not reported"),
        (["scheduler.type=asha"], "scheduler.type: asha needs intermediate results"),
    ],
)
def test_guidance_objective_errors_are_one_line(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_sweep(SWEEPS / "guidance_scale_tiny.yaml", ["checkpoint=init", *overrides])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_train_metric_must_be_reported_at_every_step():
    with pytest.raises(ConfigError, match="metric: val_loss is not reported by every train trial"):
        load_sweep(SWEEPS / "train_tiny.yaml", ["metric=val_loss"])
    # validation at every report makes val_loss usable by ASHA
    spec = load_sweep(SWEEPS / "train_tiny.yaml", ["metric=val_loss", "base.train.validate_every=1"]).spec
    assert spec.metric == "val_loss"
    with pytest.raises(ConfigError, match="scheduler.time_attr: epochs is not reported"):
        load_sweep(SWEEPS / "train_tiny.yaml", ["scheduler.time_attr=epochs"])


def test_stopped_early_compares_with_the_trials_own_budget():
    assert stopped_early({"step": 2.0}, "step", 4)
    assert not stopped_early({"step": 4.0}, "step", 4)
    assert not stopped_early({}, "step", 4)  # never reported: not an early stop
    assert not stopped_early({"step": 1.0}, "", 0)  # guidance trials have no budget


def rows() -> list[TrialRow]:
    return [
        TrialRow(
            "a_00000",
            "lr=0.003_t0",
            {"train.lr": 0.003},
            "finished",
            {"loss": 0.95, "step": 4.0, "lr": 0.003},
            "r0",
            [(1, 1.14), (2, 1.05), (3, 0.99), (4, 0.95)],
        ),
        TrialRow(
            "a_00001",
            "lr=0.001_t1",
            {"train.lr": 0.001},
            "stopped_early",
            {"loss": 1.08, "step": 2.0, "lr": 0.001},
            "r1",
            [(1, 1.14), (2, 1.08)],
        ),
        TrialRow("a_00002", "lr=1e-06_t2", {"train.lr": 1e-6}, "failed", {"loss": 0.1}, "", [], "boom"),
    ]


def test_best_trial_skips_failed_trials_and_follows_the_mode():
    assert best_row(rows(), "loss", "min").trial_id == "a_00000"
    assert best_row(rows(), "loss", "max").trial_id == "a_00001"
    assert best_row(rows(), "Sync", "max") is None


def test_summary_table_has_one_row_per_trial_with_params_and_metrics():
    table = table_rows(rows(), ["loss"])
    text = to_csv(table, table_columns(rows(), ["loss"]))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["run_name"] for r in parsed] == sorted(r.run_name for r in rows())
    by_name = {r["run_name"]: r for r in parsed}
    assert by_name["lr=0.001_t1"]["status"] == "stopped_early"
    assert (
        float(by_name["lr=0.003_t0"]["train.lr"]) == 0.003 and float(by_name["lr=0.003_t0"]["loss"]) == 0.95
    )
    assert by_name["lr=1e-06_t2"]["run_id"] == ""


def test_plots_are_written_for_each_metric_and_parameter(tmp_path):
    spec = load_sweep(SWEEPS / "train_tiny.yaml", ["plot_metrics=[lr]"]).spec
    paths = write_plots(rows(), spec, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["loss_curves.png", "loss_vs_train_lr.png", "lr_vs_train_lr.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    # a failed trial's numbers are not plotted
    assert write_plots([r for r in rows() if r.status == "failed"], spec, tmp_path / "failed") == []


def test_a_resumed_sweep_must_keep_its_settings(tmp_path, monkeypatch):
    """The parent run is found again on a re-run; changed settings are refused with the keys named."""
    from asva_platform.storage import Storage
    from sweeps.tune_runner import PreparedSweep, open_parent

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = Storage()
    sweep_uri = str(tmp_path / "sweeps" / "train-sweep-tiny")

    def prepared(*overrides):
        loaded = load_sweep(SWEEPS / "train_tiny.yaml", list(overrides))
        return PreparedSweep(loaded, uri, storage, str(tmp_path / "sweeps"), sweep_uri, cache_id="c1")

    exp_id, parent, resumed = open_parent(prepared(), print)
    assert not resumed
    again = open_parent(prepared(), print)
    assert again == (exp_id, parent, True)
    with pytest.raises(UserError) as info:
        open_parent(prepared("base.train.max_steps=6", "num_samples=2"), print)
    msg = str(info.value)
    assert "base.train.max_steps" in msg and "sweep.num_samples" in msg and "another name" in msg

    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(parent)
    assert run.data.tags["asva.sweep.role"] == "parent" and run.data.tags["asva.cache_id"] == "c1"
    assert run.data.params["search_space.train.lr.grid"] == "[0.003, 0.001, 0.0003, 1e-06]"
    arts = {a.path for a in MlflowClient(uri).list_artifacts(parent, "sweep")}
    assert {"sweep/train_tiny.yaml", "sweep/sweep.resolved.yaml", "sweep/base_config.yaml"} <= arts


def test_the_cli_fails_in_one_line_before_ray_starts(tmp_path, monkeypatch, capsys):
    import ray

    from asva_platform.errors import run_guarded
    from jobs.sweep import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    was_up = ray.is_initialized()
    assert (
        run_guarded(main, [str(SWEEPS / "train_tiny.yaml"), "search_space={train.lrr: {grid: [1.0]}}"]) == 2
    )
    err = own_lines(capsys.readouterr().err)
    assert (
        len(err) == 1 and err[0].startswith("error: ") and "search_space.train.lrr: unknown key" in err[0]
    ), err
    # an unreachable tracking server is named, and nothing is started
    args = [
        str(SWEEPS / "train_tiny.yaml"),
        "base.tracking.uri=http://127.0.0.1:9",
        f"base.storage.root={tmp_path}",
    ]
    assert run_guarded(main, args) == 2
    assert own_lines(capsys.readouterr().err) == [
        "error: cannot reach MLflow tracking server at http://127.0.0.1:9: connection refused"
    ]
    assert ray.is_initialized() == was_up
    # a guidance checkpoint that does not exist is refused before any trial
    args = [
        str(SWEEPS / "guidance_scale_tiny.yaml"),
        f"checkpoint={tmp_path}/no-such-run",
        f"base.tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"base.storage.root={tmp_path}",
    ]
    assert run_guarded(main, args) == 2
    err = own_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: checkpoint ") and "does not exist" in err[0], err
    assert ray.is_initialized() == was_up


def test_optuna_search_needs_optuna_installed():
    import importlib.util

    from sweeps.tune_runner import prepare_sweep

    with pytest.raises(ConfigError, match="`optuna` samples distributions; use choice instead of grid"):
        load_sweep(SWEEPS / "train_tiny.yaml", ["search=optuna"])
    loaded = load_sweep(
        SWEEPS / "train_tiny.yaml",
        ["search=optuna", "search_space={train.lr: {loguniform: [1.0e-5, 1.0e-3]}}"],
    )
    if importlib.util.find_spec("optuna") is not None:
        pytest.skip("optuna is installed here")
    with pytest.raises(UserError, match=r"search: optuna is not installed \(pip install optuna\)"):
        prepare_sweep(loaded)
