"""MLflow UI check in headless Debian Chromium: the sweep experiment shows its parent run, the child runs
nested under it, and a metric chart. A screenshot is saved under the test's output directory.

`make ui-check` points it at the demo's tracking server (ASVA_UI_CHECK_URI, experiment
ASVA_UI_CHECK_EXPERIMENT); otherwise it runs the tiny guidance sweep itself against the test server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.tracking import TAG_PARENT
from tests.browser import browser_page

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sweep_experiment(tmp_path_factory, request):
    uri = os.environ.get("ASVA_UI_CHECK_URI")
    if uri:
        return uri, os.environ.get("ASVA_UI_CHECK_EXPERIMENT", "guidance-scale-toy")  # make demo's sweep
    mlflow_server = request.getfixturevalue("mlflow_server")
    s3 = request.getfixturevalue("s3_server")
    _, overrides = tiny_inputs(tmp_path_factory.mktemp("ui-inputs"), clips_per_class=2, max_duration=2.6)
    out = subprocess.run(
        [sys.executable, "-m", "jobs.sweep", "sweeps/guidance_scale_tiny.yaml", "checkpoint=init",
         "name=ui-check-sweep", f"storage_path=s3://{s3.bucket}/ui-check/sweeps",
         f"base.storage.root=s3://{s3.bucket}/ui-check", "base.eval.max_videos=1",
         *[f"base.{o}" for o in overrides], "--json"],
        cwd=REPO, env=dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server.uri), capture_output=True, text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return mlflow_server.uri, "ui-check-sweep"


def test_mlflow_ui_shows_sweep_parent_children_and_chart(sweep_experiment, tmp_path):
    uri, name = sweep_experiment
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name!r} at {uri}"
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if TAG_PARENT in r.data.tags]
    parents = [r for r in runs if TAG_PARENT not in r.data.tags]
    assert len(parents) == 1 and len(children) >= 2
    parent = parents[0].info.run_name
    child_names = [r.info.run_name for r in children]
    metric = sorted(children[0].data.metrics)[0]

    with browser_page() as page:
        page.goto(f"{uri}/#/experiments/{exp.experiment_id}/runs")
        page.get_by_text(parent, exact=True).first.wait_for(timeout=30_000)
        # Children are collapsed under the parent; its expander shows them.
        page.locator("button[data-component-id*=runnamecellrenderer]").first.click(timeout=30_000)
        for child in child_names:
            page.get_by_text(child, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "mlflow-runs.png"))
        assert re.search(rf"{len(runs)} matching runs", page.inner_text("body"))

        page.goto(f"{uri}/#/experiments/{exp.experiment_id}/runs?compareRunsMode=CHART")
        page.get_by_text("Model metrics").first.wait_for(timeout=30_000)
        page.get_by_text(metric).first.wait_for(timeout=30_000)
        chart = page.locator(".js-plotly-plot, svg.main-svg, canvas")
        chart.first.wait_for(timeout=60_000)  # charts render after the run data arrives
        charts = chart.count()
        page.screenshot(path=str(tmp_path / "mlflow-chart.png"))
    assert charts >= 1
    assert (tmp_path / "mlflow-runs.png").stat().st_size > 10_000
    out_dir = os.environ.get("ASVA_UI_CHECK_OUT")
    if out_dir:  # make ui-check keeps the screenshots where the user can find them
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("*.png"):
            (Path(out_dir) / png.name).write_bytes(png.read_bytes())
