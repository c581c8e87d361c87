"""`asva compare` on a sweep's parent run: one self-contained HTML page, rendered in headless Chromium (from a
file and from the MLflow UI's artifact view), with one video element per run per clip plus the ground truth."""

from __future__ import annotations

import json
import os

import pytest

from asva_platform import compare, tracking
from asva_platform.artifacts.evaluation import log_evaluation
from asva_platform.dev.fixtures import tiny_eval_overrides
from asva_platform.errors import run_guarded
from asva_platform.evaluation.job import evaluate_checkpoint
from asva_platform.experiment import load_experiment
from asva_platform.tracking import start_run
from tests.browser import artifact_frame, browser_page

pytestmark = pytest.mark.integration
SCALES = (1.0, 4.0)
CLIPS = 3  # one video, three windows
ALL_VIDEOS_READY = (
    "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)"  # first frame decoded
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, s3_server, mlflow_server):
    """A parent run with a child per audio guidance scale (each evaluated, in process) and one failed child."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("compare")
    overrides = tiny_eval_overrides(tmp_path_factory.getbasetemp() / "eval_inputs", image_size=32) + [
        f"storage.root=s3://{s3_server.bucket}/compare-test/{tmp.name}",
        "tracking.experiment=compare-test",
        "eval.max_videos=1",
        "eval.metrics.metrics=[sync]",
        "eval.parallel=false",
    ]
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    _, parent = start_run(mlflow_server.uri, "compare-test", "guidance-sweep", job="sweep")
    children = []
    for scale in SCALES:
        cfg = load_experiment(None, [*overrides, f"generate.audio_guidance_scale={scale}"])
        _, child = start_run(
            mlflow_server.uri,
            "compare-test",
            f"trial-ag-{scale:g}",
            tracking.LoggedConfig.of(cfg),
            parent_run_id=parent,
        )
        log_evaluation(client, child, evaluate_checkpoint(cfg, log=lambda _: None).record)
        children.append(child)
    start_run(mlflow_server.uri, "compare-test", "trial-failed", parent_run_id=parent)
    return client, parent, children, mlflow_server


def test_compare_a_sweep_parent(sweep, tmp_path, capsys):
    client, parent, children, _ = sweep
    out = tmp_path / "index.html"
    code = run_guarded(compare.main, [parent, "--out", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["run_id"] == result["parent_run_id"] == parent and result["runs"] == children
    assert result["clips"] == CLIPS and result["artifact"] == compare.ARTIFACT_PATH
    assert result["mlflow_url"].split("?")[0].endswith(f"/runs/{parent}/artifactPath/{compare.ARTIFACT_PATH}")
    assert [a.path for a in client.list_artifacts(parent, "compare")] == [compare.ARTIFACT_PATH]
    html = out.read_text()
    assert "trial-failed" not in html and "Left out (no evaluation)" in html
    assert "what produced these numbers" in html and "net.unet" in html  # each run's provenance
    assert "not comparable" not in html  # the same networks, videos and protocol in both trials
    assert 'src="http' not in html and "<link" not in html  # self-contained: nothing fetched from elsewhere

    with browser_page() as p:
        p.goto(out.as_uri())
        p.wait_for_function(ALL_VIDEOS_READY, timeout=30_000)
        rows = p.eval_on_selector_all(
            "table.clips tr:not(.curves)", "rs => rs.slice(1).map(r => r.querySelectorAll('video').length)"
        )
        curves = p.eval_on_selector_all(
            "table.clips tr.curves", "rs => rs.map(r => r.querySelectorAll('svg').length)"
        )
        durations = p.eval_on_selector_all("video", "vs => vs.map(v => v.duration)")
        header = p.eval_on_selector_all("table.runs tr", "rs => rs.map(r => r.innerText)")
        p.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert rows == [1 + len(children)] * CLIPS  # ground truth + one per run, every clip
    assert curves == [1] * CLIPS  # under each clip: its onset envelope and every column's motion curve
    assert len(durations) == CLIPS * (1 + len(children)) and all(abs(d - 2.0) < 0.15 for d in durations)
    assert len(header) == 1 + len(children) and "Sync" in header[0]
    assert [h.split("\t")[2] for h in header[1:]] == [f"{s:g}" for s in SCALES]  # audio guidance column
    assert (tmp_path / "compare.png").stat().st_size > 10_000


def _artifact_view_frame(p, mlflow_uri: str, run, path: str):
    """Open ``path`` of ``run`` in the MLflow UI; returns the viewer's sandboxed iframe (a blob: document)."""
    p.goto(f"{mlflow_uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifactPath/{path}")
    return artifact_frame(p)


def test_page_plays_inside_the_mlflow_artifact_view(sweep, tmp_path, capsys):
    client, parent, children, mlflow = sweep
    assert run_guarded(compare.main, [children[0], children[1], "--json"]) == 0
    result = json.loads(capsys.readouterr()[0].strip().splitlines()[-1])
    run = client.get_run(result["run_id"])
    assert run.data.tags[tracking.TAG_COMPARED] == ",".join(children) and result["run_id"] not in (
        parent,
        *children,
    )
    # Why videos are data URIs: a page whose <video> points at a file logged beside it cannot load it there.
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "index.html").write_text('<video src="clip.mp4"></video>')
    (tmp_path / "probe" / "clip.mp4").write_bytes(_first_clip(client, children[0]))
    client.log_artifacts(run.info.run_id, str(tmp_path / "probe"), "probe")
    with browser_page() as p:
        frame = _artifact_view_frame(p, mlflow.uri, run, compare.ARTIFACT_PATH)
        frame.wait_for_function(ALL_VIDEOS_READY, timeout=30_000)
        count = frame.eval_on_selector_all("video", "vs => vs.length")
        p.screenshot(path=str(tmp_path / "mlflow-artifact-view.png"), full_page=True)
        p.goto("about:blank")  # drop the comparison page's frame
        probe = _artifact_view_frame(p, mlflow.uri, run, "probe/index.html")
        probe.wait_for_function(
            "(v => v.error !== null || v.networkState === 3)(document.querySelector('video'))", timeout=30_000
        )
        linked_ready = probe.evaluate("document.querySelector('video').readyState")
    assert count == CLIPS * (1 + len(children))
    assert linked_ready == 0


def _first_clip(client, run_id: str) -> bytes:
    from asva_platform.artifacts.evaluation import load_evaluation
    from asva_platform.storage import Storage

    return Storage().read_bytes(load_evaluation(client, run_id).clips[0].video_uri)


def test_bad_runs_are_one_line_errors(sweep, capsys):
    _, parent, children, _ = sweep
    assert os.environ.get("MLFLOW_TRACKING_URI")
    code = run_guarded(compare.main, ["0" * 32])
    assert code == 2 and "not found" in capsys.readouterr()[1]
    _, bare = start_run(os.environ["MLFLOW_TRACKING_URI"], "compare-test", "never-evaluated")
    code = run_guarded(compare.main, [children[0], bare])
    assert code == 2 and "has no evaluation" in capsys.readouterr()[1]
