"""Run several job invocations in ONE Python process (imports paid once) and report, per invocation, the exit
code, stderr, and whether Ray was initialized or created a session directory. Used by the fail-fast tests.

Usage: ``python -m tests.reliability.job_probe '<json list of [module, argv]>'``; prints one JSON line.
:func:`run_jobs` runs it from a test and checks the one-line-error-without-Ray contract.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from pathlib import Path

from asva_platform.dev.services import with_env

REPO = Path(__file__).resolve().parents[2]


def run_jobs(
    cases: dict[str, tuple[str, list[str], list[str]]],
    tmp_path: Path,
    env_extra: dict[str, str] | None = None,
) -> None:
    """Run ``{name: (module, argv, needles)}`` in one subprocess; assert each ends with exit 2, exactly one
    ``error: ...`` line on stderr containing every needle, and no Ray started (no session dir, not initialized)."""
    import subprocess

    ray_tmp = tmp_path / "ray-tmp"
    env = with_env(dict(os.environ), {"RAY_TMPDIR": str(ray_tmp)}, env_extra or {})
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.job_probe",
            json.dumps([[m, a] for m, a, _ in cases.values()]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (name, (_, _, needles)), res in zip(cases.items(), results, strict=True):
        lines = res["stderr"].strip().splitlines()
        assert res["rc"] == 2, f"{name}: rc={res['rc']}\n{res['stderr'][-3000:]}"
        assert len(lines) == 1 and lines[0].startswith("error: "), (
            f"{name}: not one line:\n{res['stderr'][-3000:]}"
        )
        assert all(n in lines[0] for n in needles), f"{name}: {lines[0]}"
        assert not res["ray_initialized"] and not res["ray_session_dir"], f"{name}: Ray was started"
    assert not ray_tmp.exists() or not any(ray_tmp.iterdir())


def main() -> None:
    from asva_platform.errors import run_guarded

    cases = json.loads(sys.argv[1])
    ray_tmp = Path(os.environ["RAY_TMPDIR"])
    results = []
    for module, argv in cases:
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = run_guarded(importlib.import_module(module).main, argv)
            except BaseException as exc:  # an unguarded crash is a finding, reported not raised
                rc, err = -1, io.StringIO(f"{type(exc).__name__}: {exc}")
        ray = sys.modules.get("ray")
        results.append(
            {
                "rc": rc,
                "stderr": err.getvalue(),
                "stdout": out.getvalue(),
                "ray_initialized": bool(ray and ray.is_initialized()),
                "ray_session_dir": ray_tmp.exists() and any(ray_tmp.iterdir()),
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
