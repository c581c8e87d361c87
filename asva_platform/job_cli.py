"""The command line every experiment job shares: ``python -m jobs.<stage> --config FILE [overrides] [--json]``."""

from __future__ import annotations

import argparse


def job_parser(module: str, doc: str, override_example: str) -> argparse.ArgumentParser:
    """A parser with --config, --json and dotted overrides; stages add their own options to it."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    p.add_argument("--config", required=True, help="experiment YAML (e.g. configs/tiny.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {override_example}")
    return p


def print_result(result, as_json: bool) -> None:
    """A job's one-line summary, then (``--json``) its result as one JSON object on the last line."""
    import json

    print(result.summary_line(), flush=True)
    if as_json:
        print(json.dumps(result.to_json()), flush=True)
