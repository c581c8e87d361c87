"""The README's walkthrough, run as written (bash, from the repo root) on a stack of its own: `eval "$(asva stack
env)"`, then a stage directly on the driver, one through `asva submit` and one through `ray job submit`. Then
the whole stack is stopped and started again, as at the end of a day: every object (cache shards, checkpoints,
the export, MLflow's artifacts) is still there with the same bytes, MLflow still serves every run's
artifacts, and the walkthrough run again resumes the training run from its last checkpoint."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import leftovers
from tests.stack_helpers import REPO, asva, mlflow_artifacts, settings_of, stack_env, stack_objects

# 12 min on a 2-core box (the walkthrough twice around a stack restart): `make test-all` runs it; CI's `make
# test` covers its pieces one by one (test_stack, test_submit, test_train's resume, test_storage)
pytestmark = [pytest.mark.integration, pytest.mark.slow]
MARKER = "<!-- walkthrough:"
TRY_DIR = Path("/tmp/asva-try")  # where the walkthrough writes its inputs
RESUMED = re.compile(r"resumed from \S*/runs/try/step_00000004 at step 4")


def walkthrough() -> str:
    """The bash block that follows the walkthrough marker in README.md."""
    text = (REPO / "README.md").read_text()
    start = text.index("```bash\n", text.index(MARKER)) + len("```bash\n")
    return text[start : text.index("```", start)]


def run_walkthrough(env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    return out


def test_the_walkthrough_runs_as_written_and_a_restart_keeps_everything(tmp_path):
    env = stack_env(tmp_path / "state", ASVA_RAY_NUM_CPUS="4")
    settings = settings_of(env)
    shutil.rmtree(TRY_DIR, ignore_errors=True)
    try:
        out = run_walkthrough(env)
        assert re.search(r'"cache_id": "[0-9a-f]+"', out)  # preprocess ran on the driver
        assert re.search(r"job asva-train-\S+ SUCCEEDED", out)  # asva submit
        assert re.search(r"Job 'raysubmit_\w+' succeeded", out)  # ray job submit
        assert len(RESUMED.findall(out)) == 1  # Ray's CLI job resumed the run asva submit trained

        objects = stack_objects(settings)
        kinds = {
            "cache shard": "/caches/",
            "checkpoint": "/runs/try/step_00000004/",
            "export": "/export/unet/",
            "MLflow artifact": "/mlartifacts/",
        }
        for kind, part in kinds.items():
            assert any(part in uri for uri in objects), f"no {kind} in the bucket: {sorted(objects)}"
        artifacts = mlflow_artifacts(settings, tmp_path / "before")
        assert {path for _, path in artifacts} >= {"config.yaml", "manifest.json"}

        down = asva(["stack", "down"], env)
        assert down.returncode == 0, down.stderr
        assert leftovers.session_processes(env[leftovers.SESSION_ENV]) == []
        up = asva(["stack", "up"], env)
        assert up.returncode == 0 and up.stdout.count("started") == 3, up.stdout + up.stderr

        assert stack_objects(settings) == objects  # every object, byte for byte
        assert mlflow_artifacts(settings, tmp_path / "after") == artifacts  # served again by MLflow

        again = run_walkthrough(env)
        assert '"noop": true' in again  # the cache is found whole: nothing to preprocess
        assert len(RESUMED.findall(again)) == 2  # both training jobs resumed from the last checkpoint
    finally:
        asva(["stack", "down"], env)
        shutil.rmtree(TRY_DIR, ignore_errors=True)
