"""The MLflow UI as a person sees it, in headless Debian Chromium, at the exact links `make demo` prints.

`make ui-check` opens the links the demo wrote (ASVA_UI_CHECK_LINKS, default `.asva/demo-toy/links.json`)
and copies the screenshots to ASVA_UI_CHECK_OUT (`out/ui-check/`). In `make test` the fixture makes the
same links the same way (`asva_platform.dev.demo.links_of` on the stages' --json results) from a tiny
guidance sweep with two seeds per scale and its comparison page.

Checked: the runs table (not MLflow 3's GenAI overview) with the sweep's parent and its trials nested under
it; the parent run's description; the Sync plot image; the comparison page's videos playing in step after
"play all".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from asva_platform import compare
from asva_platform.dev.demo import links_of
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.tracking import TAG_PARENT, UI_MODE
from tests.browser import artifact_frame, browser_page

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SWEEP = "ui-check-sweep"


def _demo_links() -> dict | None:
    path = os.environ.get("ASVA_UI_CHECK_LINKS")
    if not path:
        return None
    if not Path(path).exists():
        pytest.fail(f"{path} does not exist: run `make demo` first (it writes the links it prints there)")
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def links(tmp_path_factory, request) -> dict:
    found = _demo_links()
    if found is not None:
        return found
    mlflow_server = request.getfixturevalue("mlflow_server")
    s3 = request.getfixturevalue("s3_server")
    _, overrides = tiny_inputs(tmp_path_factory.mktemp("ui-inputs"), clips_per_class=2, max_duration=2.6)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.sweep",
            "sweeps/guidance_scale_tiny.yaml",
            "checkpoint=init",
            f"name={SWEEP}",
            f"storage_path=s3://{s3.bucket}/ui-check/sweeps",
            "seeds=[0, 1]",
            "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}}",
            "max_concurrent_trials=2",
            f"base.storage.root=s3://{s3.bucket}/ui-check",
            "base.eval.max_videos=1",
            *[f"base.{o}" for o in overrides],
            "--json",
        ],
        cwd=REPO,
        env=dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server.uri),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep = json.loads(out.stdout.strip().splitlines()[-1])
    assert [(r["value"], r["seeds"]) for r in sweep["comparison"]["rows"]] == [(1.0, 2), (4.0, 2)]
    page = compare.run([sweep["parent_run_id"]])  # tracking server and S3 endpoint from the environment
    return links_of(sweep, page)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui-shots")
    yield folder
    out_dir = os.environ.get("ASVA_UI_CHECK_OUT")
    if out_dir:  # make ui-check keeps the screenshots where the user can find them
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            (Path(out_dir) / png.name).write_bytes(png.read_bytes())


def _server_and_ids(url: str) -> tuple[str, str, str]:
    """(server, experiment id, run id) of a UI link ``<server>/#/experiments/<id>/runs[/<run>...][?query]``."""
    server, _, route = url.partition("/#/")
    parts = route.split("?")[0].split("/")
    return server, parts[1], parts[3] if len(parts) > 3 else ""


def test_the_runs_link_opens_the_runs_table_with_the_sweeps_trials(links, shots):
    server, exp_id, _ = _server_and_ids(links["runs"])
    client = MlflowClient(server)
    runs = client.search_runs([exp_id])
    children = [r.info.run_name for r in runs if TAG_PARENT in r.data.tags]
    parents = [
        r.info.run_name
        for r in runs
        if TAG_PARENT not in r.data.tags and r.data.tags.get("asva.job") == "sweep"
    ]
    assert len(parents) == 1 and len(children) >= 4
    with browser_page() as page:
        page.goto(links["runs"])
        page.get_by_text(parents[0], exact=True).first.wait_for(timeout=60_000)
        page.locator("button[data-component-id*=runnamecellrenderer]").first.click(timeout=30_000)  # expand
        for child in children:
            page.get_by_text(child, exact=True).first.wait_for(timeout=30_000)
        body = page.inner_text("body")
        page.screenshot(path=str(shots / "runs-table.png"))
        assert page.url.split("?")[0].endswith(
            f"/experiments/{exp_id}/runs"
        )  # not sent to the GenAI overview
    assert "matching runs" in body and "Detect issues" not in body
    assert "Model registry" in body and "Judges" not in body  # the model-training mode's navigation


def test_the_parent_link_shows_the_sweeps_description(links, shots):
    server, _, parent = _server_and_ids(links["parent"])
    note = MlflowClient(server).get_run(parent).data.tags["mlflow.note.content"]
    first_line = note.splitlines()[0].replace("*", "").replace("`", "")
    assert first_line.startswith("guidance sweep")
    with browser_page() as page:
        page.goto(links["parent"])
        page.get_by_text("guidance sweep", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text("best trial", exact=False).first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "sweep-parent.png"))


def test_the_plot_link_shows_the_sync_plot(links, shots):
    assert "/artifactPath/plots/Sync_vs_" in links["plot"] and links["plot"].endswith(UI_MODE)
    with browser_page() as page:
        page.goto(links["plot"])
        image = page.locator("img[src^='blob:'], img[src*='get-artifact'], img[src*='artifacts']").first
        image.wait_for(timeout=60_000)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=30_000
        )
        size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        page.screenshot(path=str(shots / "sync-plot.png"))
    assert size == [550, 380]  # the plot's figure: 5.5 x 3.8 in at 100 dpi


def test_the_compare_link_plays_every_video_in_step(links, shots):
    assert links["compare"].split("?")[0].endswith("/artifactPath/compare/index.html")
    with browser_page() as page:
        page.goto(links["compare"])
        frame = artifact_frame(page)
        frame.wait_for_function(
            "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)", timeout=60_000
        )
        headings = frame.eval_on_selector_all("table.clips th", "ths => ths.map(t => t.innerText)")
        frame.click("#play-all")
        frame.wait_for_timeout(1500)
        times = frame.eval_on_selector_all(
            "table.clips video", "vs => vs.map(v => [v.currentTime, v.paused])"
        )
        page.screenshot(path=str(shots / "compare-page.png"), full_page=True)
    assert all(not paused for _, paused in times) and len(times) >= 5
    clock = [t for t, _ in times]
    assert min(clock) > 0.2  # playing: time advanced
    # in step: at most the follow threshold plus a frame apart (the clips loop every 2 s; compare on the circle)
    spread = max(min(abs(a - b), 2.0 - abs(a - b)) for a in clock for b in clock)
    assert spread < 0.25, clock
    assert any("Sync" in h and "[" in h for h in headings[2:])  # each run's column states Sync with its CI


def test_every_printed_link_opens_its_run(links, shots):
    """Each link the demo prints (the training run and the evaluation's per-class table too, under make
    ui-check) opens a page that names its run, and an artifact link shows that artifact."""
    assert links
    for key, url in links.items():
        server, exp_id, run_id = _server_and_ids(url)
        client = MlflowClient(server)
        name = client.get_run(run_id).info.run_name if run_id else client.get_experiment(exp_id).name
        with browser_page() as page:
            page.goto(url)
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            if "/artifactPath/" in url:
                artifact = url.split("/artifactPath/", 1)[1].split("?")[0]
                page.get_by_text(artifact, exact=False).first.wait_for(timeout=30_000)  # the viewer's heading
            body = page.inner_text("body")
            page.screenshot(path=str(shots / f"link-{key}.png"))
        assert "Model registry" in body and "Judges" not in body, key  # the model-training mode, not GenAI
