"""Shared by the sweep tests on real services (tests/integration/test_sweep.py) and the killed-sweep-driver test
(tests/reliability/test_sweep_driver_killed.py): what they read back from MLflow. The inputs are the session
fixture ``sweep_inputs`` (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"


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


def check_comparison(out: dict, children: list, scales: list[float]) -> None:
    """The --json comparison: one row per scale against the first, matching each child's logged metrics."""
    comp = out["comparison"]
    assert (comp["param"], comp["metric"], comp["baseline"]) == (
        "generate.audio_guidance_scale",
        "Sync",
        scales[0],
    )
    assert [r["value"] for r in comp["rows"]] == scales
    assert comp["best"] == max(comp["rows"], key=lambda r: r["mean"])["value"]
    logged = {float(c.data.params["generate.audio_guidance_scale"]): c.data.metrics for c in children}
    for row in comp["rows"]:
        m = logged[row["value"]]
        assert row["mean"] == pytest.approx(m["eval/Sync"]) and row["win_rate"] == pytest.approx(
            m["eval/Sync_win_rate"]
        )
        assert row["ci_low"] == pytest.approx(m["eval/Sync_ci_low"]) and row["shifted"] == pytest.approx(
            m["eval/Sync_shifted"]
        )
        assert (
            row["num_clips"] == m["eval/num_clips"]
            and row["gain_ci_low"] <= row["gain"] <= row["gain_ci_high"]
        )
    assert comp["rows"][0]["gain"] == 0.0
