"""Fill the ``${ASVA_*}`` placeholders of an infra file from the environment.

    export ASVA_IMAGE=... ASVA_DATA_BUCKET=...       # see infra/README.md, "Placeholders"
    python infra/render.py infra/k8s/rayjob-train.yaml | kubectl apply -f -
    python infra/render.py infra/aws/cluster.yaml > asva-cluster.yaml && ray up asva-cluster.yaml

Only ``${ASVA_NAME}`` placeholders are touched, so shell variables in the files (``$RAY_HEAD_IP`` in the
cluster launcher's start commands) survive. A placeholder with no value, or a value that would change
the YAML/JSON structure, is an error naming the variable: a half-filled manifest never reaches a cluster.
Standard library only, so it runs with any Python 3 the user has next to ``ray``/``kubectl``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{(ASVA_[A-Z0-9_]+)\}")
# Image URIs, bucket names, ARNs, AMI ids, URLs: none needs YAML/JSON quoting, spaces or '#'.
SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/@+=,-]+")


class RenderError(ValueError):
    """A placeholder is missing or has a value that is unsafe to paste into YAML/JSON."""


def placeholders(text: str) -> list[str]:
    """The distinct ``ASVA_*`` names used in ``text``, sorted."""
    return sorted(set(PLACEHOLDER.findall(text)))


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every ``${ASVA_*}`` replaced from ``values``; RenderError lists all problems at once."""
    names = placeholders(text)
    missing = [n for n in names if not values.get(n)]
    unsafe = [n for n in names if values.get(n) and not SAFE_VALUE.fullmatch(values[n])]
    problems = []
    if missing:
        problems.append("not set: " + ", ".join(missing))
    if unsafe:
        problems.append("values with characters outside [A-Za-z0-9._:/@+=,-]: " + ", ".join(unsafe))
    if problems:
        raise RenderError("; ".join(problems))
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="infra file with ${ASVA_*} placeholders")
    parser.add_argument("--list", action="store_true", help="print the placeholders the file needs and exit")
    args = parser.parse_args(argv)
    try:
        text = args.path.read_text()
    except OSError as err:
        print(f"render: cannot read {args.path}: {err.strerror}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(placeholders(text)))
        return 0
    try:
        sys.stdout.write(render(text, os.environ))
    except RenderError as err:
        print(f"render: {args.path}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
