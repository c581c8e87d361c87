"""Imports flow one way, jobs -> sweeps -> asva_platform -> asva_model, and asva_model never imports Ray.
Checked on the source (every import statement, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["jobs", "sweeps", "asva_platform", "asva_model"]  # each may import only those after it
EXTRA_FORBIDDEN = {"asva_model": {"ray"}}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    above = set(LAYERS[:LAYERS.index(layer)]) | {"bench", "tests"} | EXTRA_FORBIDDEN.get(layer, set())
    files = sorted((REPO / layer).rglob("*.py"))
    assert files
    wrong = [f"{p.relative_to(REPO)}:{line} imports {pkg}" for p in files for pkg, line in imported_packages(p)
             if pkg in above]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from jobs.train import main\n    import ray.train\n")
    assert imported_packages(source) == {("jobs", 2), ("ray", 3)}
