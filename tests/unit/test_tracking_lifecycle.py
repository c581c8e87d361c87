"""One run lifecycle for every stage: the body's outcome becomes the run's status; one tag vocabulary."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from asva_platform import tracking

REPO = Path(__file__).resolve().parents[2]


class RecordingClient:
    """Stands in for MlflowClient: records the statuses it is asked to set (the only thing under test)."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, str]] = []

    def set_terminated(self, run_id: str, status: str) -> None:
        self.statuses.append((run_id, status))


@pytest.mark.parametrize(
    "raised, status", [(None, "FINISHED"), (ValueError("bad"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_the_body_outcome_becomes_the_status(raised, status):
    client = RecordingClient()
    with pytest.raises(type(raised)) if raised else _nothing():
        with tracking.run_status(client, "r1") as run_id:
            assert run_id == "r1"
            if raised:
                raise raised
    assert client.statuses == [("r1", status)]


def test_a_run_someone_else_owns_is_left_alone():
    client = RecordingClient()
    with pytest.raises(RuntimeError), tracking.run_status(client, "r2", close=False):
        raise RuntimeError("boom")
    assert client.statuses == []


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_every_tag_name_is_defined_once_in_tracking():
    tag_literal = re.compile(r"""^["'](asva\.[\w.{}]+|mlflow\.[a-z]+\.[\w.]+|mlflow\.parentRunId)["']$""")
    defined_elsewhere = []
    for folder in ("asva_platform", "sweeps", "jobs"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "asva_platform" / "tracking.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and tag_literal.match(repr(node.value))
                ):
                    defined_elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
    assert not defined_elsewhere, "\n".join(defined_elsewhere)


def test_no_stage_closes_runs_by_hand():
    by_hand = [
        f"{p.relative_to(REPO)}"
        for folder in ("asva_platform", "sweeps")
        for p in sorted((REPO / folder).rglob("*.py"))
        if p.name != "tracking.py"
        and re.search(r"except BaseException[^\n]*:\n\s+\S*set_terminated", p.read_text())
    ]
    assert not by_hand, by_hand
