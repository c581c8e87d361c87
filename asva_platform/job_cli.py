"""The command line every experiment job shares:
``python -m jobs.<stage> --config FILE [overrides] [--json] [--check]``.

:class:`StageJob` is the one skeleton of the ``jobs/*.py`` mains: runtime defaults, parse, load and validate the
config (nothing started yet), ``--check`` stops there, then the stage's ``run`` and its result: a summary line,
and with ``--json`` one JSON object on the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asva_platform.cluster import apply_runtime_defaults
from asva_platform.config import replace_dotted
from asva_platform.experiment import ExperimentConfig, load_experiment


def job_parser(module: str, doc: str, override_example: str) -> argparse.ArgumentParser:
    """A parser with --config, --json and dotted overrides; stages add their own options to it."""
    # no abbreviations: a mistyped flag (--imag) must fail, not silently become another one (--image)
    p = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--config", required=True, help="experiment YAML (e.g. configs/tiny.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {override_example}")
    add_check_flag(p)
    return p


def add_check_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config and arguments, print 'ok' and exit without starting anything "
        "(`asva submit` runs this before submitting)",
    )


def checked_only(args: argparse.Namespace, what: str) -> bool:
    """True (after printing ``ok: what``) when the job was asked only to validate its inputs."""
    if args.check:
        print(f"ok: {what}", flush=True)
    return bool(args.check)


def print_result(result, as_json: bool) -> None:
    """A job's one-line summary, then (``--json``) its result as one JSON object on the last line."""
    print(result.summary_line(), flush=True)
    if as_json:
        print(json.dumps(result.to_json()), flush=True)


def ray_running() -> bool:
    """Whether this process is connected to Ray (without importing Ray: a job that fails its checks never does)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def shutdown_ray_if_started(was_running: bool) -> None:
    """Stop the Ray this job started: flushes worker output, so a JSON line printed next really is the last."""
    if ray_running() and not was_running:
        sys.modules["ray"].shutdown()


@dataclass
class StageJob:
    """One stage's ``python -m jobs.<stage>`` (see the module doc)."""

    module: str
    """``jobs.<stage>``, for the usage line."""
    doc: str
    """The job module's docstring (its first line is the description)."""
    run: Callable[[ExperimentConfig, argparse.Namespace], Any]
    """Runs the stage on the loaded config (+ the stage's own arguments); returns its Result."""
    override_example: str
    """Shown in ``--help``."""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    """The stage's own options."""
    check_arguments: Callable[[argparse.Namespace], None] | None = None
    """Raises a one-line error for a bad combination of the stage's options (before the config is read)."""
    checkpoint_option: bool = False
    """Add ``--checkpoint REF`` (sets ``eval.checkpoint``)."""
    check_config: Callable[[ExperimentConfig], None] | None = None
    """Raises a one-line error for what the config alone shows the stage cannot run. Runs with ``--check`` too,
    so ``asva submit`` refuses locally what the job would refuse on the cluster."""

    def main(self, argv: list[str] | None = None) -> int:
        apply_runtime_defaults()  # before ray/deepspeed are imported
        p = job_parser(self.module, self.doc, self.override_example)
        if self.checkpoint_option:
            p.add_argument(
                "--checkpoint", default=None, help="init | storage URI | MLflow run id (sets eval.checkpoint)"
            )
        if self.add_arguments:
            self.add_arguments(p)
        args = p.parse_args(argv)
        if self.check_arguments:
            self.check_arguments(args)
        experiment = load_experiment(args.config, args.overrides)
        if getattr(
            args, "checkpoint", None
        ):  # set as given: a run id must not go through YAML number parsing
            experiment = replace_dotted(experiment, {"eval.checkpoint": args.checkpoint}, "--checkpoint")
        if self.check_config:
            self.check_config(experiment)
        if checked_only(args, experiment.name):
            return 0
        was_running = ray_running()
        result = self.run(experiment, args)
        shutdown_ray_if_started(was_running)
        print_result(result, args.json)
        return 0
