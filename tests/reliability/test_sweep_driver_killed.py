"""Case: the driver of a guidance sweep is SIGKILLed after its first trial finished (with it goes the local Ray
it started: GCS, raylet, trial workers). Re-running the same command resumes the sweep from its state on S3:
the finished trials are kept (same MLflow runs, not run again), the rest run, and MLflow holds one parent with
4 children, no run twice.

Real parts, as in tests/integration/test_sweep.py (whose inputs it shares): the moto S3 server, a real
``mlflow server``; the driver is ``python -m jobs.sweep`` in its own process group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from asva_platform.storage import Storage, join
from tests.reliability.helpers import job_env
from tests.sweep_helpers import REPO, SWEEPS, check_comparison, client, runs_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~3 min: `make test-reliability` runs it


def saved_trial_statuses(storage: Storage, sweep_uri: str) -> dict[str, str]:
    """``{trial_id: status}`` as of Tune's last saved experiment state (what a restore would start from);
    empty before the first save."""
    base = sweep_uri.rstrip("/") + "/"
    states = sorted(
        u
        for u in storage.list(sweep_uri)
        if "/" not in u[len(base) :] and u[len(base) :].startswith("experiment_state-")
    )
    if not states:
        return {}
    out = {}
    for trial_json, _ in storage.read_json(states[-1]).get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        out[str(trial.get("trial_id"))] = str(trial.get("status"))
    return out


def sweep_command(sweep_inputs, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.sweep",
        str(SWEEPS / "guidance_scale_tiny.yaml"),
        *sweep_inputs["overrides"],
        f"name={name}",
        "checkpoint=init",
        "search_space={generate.audio_guidance_scale: {grid: [1.0, 2.0, 4.0, 8.0]}}",
        "--json",
    ]


@pytest.mark.timeout(1500)
def test_a_killed_sweep_driver_resumes_without_duplicate_runs(sweep_inputs, mlflow_server, tmp_path):
    name = "guidance-resume-test"
    sweep_uri = join(sweep_inputs["root"], "sweeps", name)
    env, ray_tmp = job_env(mlflow_server.uri)  # the driver starts its own local Ray, under its own temp dir
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        driver = subprocess.Popen(
            sweep_command(sweep_inputs, name),
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
        shutil.rmtree(ray_tmp, ignore_errors=True)
    done_before = {t for t, s in statuses.items() if s == "TERMINATED"}
    assert len(done_before) < 4, "the sweep finished before the driver was killed"
    _, children_before = runs_of(name)
    finished_before = {
        c.data.tags["asva.sweep.trial_id"]: c for c in children_before if c.info.status == "FINISHED"
    }
    assert done_before <= set(finished_before)

    env, ray_tmp = job_env(mlflow_server.uri)
    rerun = subprocess.run(
        sweep_command(sweep_inputs, name), cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    out = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert out["resumed"] is True and out["trials"] == 4
    assert "Sync vs generate.audio_guidance_scale" in rerun.stdout  # the comparison table on the console

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
