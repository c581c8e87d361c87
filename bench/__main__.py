"""`make bench` / `python -m bench [name ...]`: run every benchmark module `bench/bench_*.py` in turn.

Each benchmark measures its comparisons side by side in one run and prints ratios; nothing here asserts
timings. Results are also written as JSON under bench/results/.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in argv]
    failures = 0
    for name in wanted or names:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").main([])
        except Exception as err:  # one broken benchmark should not hide the others
            failures += 1
            print(f"{name} failed: {type(err).__name__}: {err}", flush=True)
        print(f"--- {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
