"""Run several job invocations in ONE Python process (imports paid once) and report, per invocation, the exit
code, stderr, and whether Ray was initialized or created a session directory. Used by test_bad_config.py.

Usage: ``python -m tests.reliability.badconfig_probe '<json list of [module, argv]>'``; prints one JSON line.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from pathlib import Path


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
        results.append({"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue(),
                        "ray_initialized": bool(ray and ray.is_initialized()),
                        "ray_session_dir": ray_tmp.exists() and any(ray_tmp.iterdir())})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
