"""The command line every experiment job shares:
``python -m jobs.<stage> --config FILE [overrides] [--json] [--check]``."""

from __future__ import annotations

import argparse


def job_parser(module: str, doc: str, override_example: str) -> argparse.ArgumentParser:
    """A parser with --config, --json and dotted overrides; stages add their own options to it."""
    # no abbreviations: a mistyped flag (--imag) must fail, not silently become another one (--image)
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0], allow_abbrev=False)
    p.add_argument("--config", required=True, help="experiment YAML (e.g. configs/tiny.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {override_example}")
    add_check_flag(p)
    return p


def add_check_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true",
                   help="validate the config and arguments, print 'ok' and exit without starting anything "
                        "(`asva submit` runs this before submitting)")


def checked_only(args: argparse.Namespace, what: str) -> bool:
    """True (after printing ``ok: what``) when the job was asked only to validate its inputs."""
    if args.check:
        print(f"ok: {what}", flush=True)
    return bool(args.check)


def print_result(result, as_json: bool) -> None:
    """A job's one-line summary, then (``--json``) its result as one JSON object on the last line."""
    import json

    print(result.summary_line(), flush=True)
    if as_json:
        print(json.dumps(result.to_json()), flush=True)
