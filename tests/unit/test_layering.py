"""The import graph, checked on the source (every import statement, including those inside functions).

* Top level: imports flow one way, jobs -> sweeps -> asva_platform -> asva_model, and asva_model never
  imports Ray.
* Inside asva_platform: the stage packages (preprocess, training, evaluation, generation) never import each
  other, nor the dev tooling; what they share lives in the shared modules (``artifacts/``, ``storage``,
  ``tracking``, ``config`` ...), which import no stage (the experiment tree imports each stage's config
  section, its only link to them). Sweeps, the stage that runs other stages, uses only their entry
  modules (``asva_platform.<stage>.job``).
* A function-level import of the project's own modules states why on its line (a comment): lazy imports of
  our own code hide the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["jobs", "sweeps", "asva_platform", "asva_model"]  # each may import only those after it
EXTRA_FORBIDDEN = {"asva_model": {"ray"}}
OWN = set(LAYERS)
PLATFORM = REPO / "asva_platform"
STAGES = ["preprocess", "training", "evaluation", "generation"]
DEV = "dev"
SHARED_MAY_IMPORT = {
    "asva_platform/experiment.py": {f"asva_platform.{s}.config" for s in STAGES},  # the config tree
    "asva_platform/cli.py": {"asva_platform.dev"},  # `asva stack ...`
}


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, inside a function)`` for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(sub) for sub in ast.walk(node) if sub is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in in_function) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno, id(node) in in_function))
            # `from asva_platform import training` names a subpackage
            found += [
                (f"{node.module}.{alias.name}", node.lineno, id(node) in in_function) for alias in node.names
            ]
    return found


def imported_packages(path: Path) -> set[tuple[str, int]]:
    return {(module.split(".")[0], line) for module, line, _ in imports_of(path)}


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def sources(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.py"))
    assert files, folder
    return files


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    above = set(LAYERS[: LAYERS.index(layer)]) | {"bench", "tests"} | EXTRA_FORBIDDEN.get(layer, set())
    wrong = [
        f"{p.relative_to(REPO)}:{line} imports {pkg}"
        for p in sources(REPO / layer)
        for pkg, line in imported_packages(p)
        if pkg in above
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage_and_no_dev_tooling(stage):
    others = [f"asva_platform.{s}" for s in STAGES if s != stage] + [f"asva_platform.{DEV}", "sweeps"]
    wrong = [
        f"{p.relative_to(REPO)}:{line} imports {module}"
        for p in sources(PLATFORM / stage)
        for module, line, _ in imports_of(p)
        if any(under(module, o) for o in others)
    ]
    assert not wrong, "\n".join(wrong)


def test_shared_modules_import_no_stage():
    shared = [p for p in sources(PLATFORM) if p.relative_to(PLATFORM).parts[0] not in (*STAGES, DEV)]
    assert any(p.parent.name == "artifacts" for p in shared)
    wrong = []
    for p in shared:
        rel = str(p.relative_to(REPO))
        allowed = SHARED_MAY_IMPORT.get(rel, set())
        for module, line, _ in imports_of(p):
            hit = [s for s in (*STAGES, DEV) if under(module, f"asva_platform.{s}")]
            if hit and not any(under(module, a) for a in allowed):
                wrong.append(f"{rel}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_sweeps_use_only_the_stages_entry_modules():
    entries = {f"asva_platform.{s}.job" for s in STAGES} | {f"asva_platform.{s}.config" for s in STAGES}
    wrong = []
    for p in sources(REPO / "sweeps"):
        for module, line, _ in imports_of(p):
            stage = [s for s in STAGES if under(module, f"asva_platform.{s}")]
            # `from asva_platform.training import job` is recorded as both the package and the module
            if stage and module not in entries and module != f"asva_platform.{stage[0]}":
                wrong.append(f"{p.relative_to(REPO)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_function_level_imports_of_our_own_modules_state_why():
    wrong = []
    for layer in LAYERS:
        for p in sources(REPO / layer):
            lines = p.read_text().splitlines()
            for module, line, inside in imports_of(p):
                if inside and module.split(".")[0] in OWN and "#" not in lines[line - 1]:
                    wrong.append(f"{p.relative_to(REPO)}:{line} imports {module} inside a function")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_checks_see_function_level_and_submodule_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from asva_platform import training\n\ndef f():\n    from jobs.train import main\n"
        "    import ray.train\n"
    )
    assert imported_packages(source) == {("asva_platform", 1), ("jobs", 4), ("ray", 5)}
    found = imports_of(source)
    assert ("asva_platform.training", 1, False) in found and ("jobs.train", 4, True) in found


# Where the experiment config may be a parameter: the job edges (each stage's job.py, the jobs' shared skeleton,
# the commands that load a config for the user, sweeps and the dev tooling, which drive whole stages); below
# them, functions take the sections they use.
EXPERIMENT_EDGES = {f"asva_platform/{s}/job.py" for s in STAGES} | {
    "asva_platform/experiment.py",
    "asva_platform/job_cli.py",
    "asva_platform/cli.py",
    "asva_platform/submit.py",
    "asva_platform/compare.py",
}
CONFIG_NAMES = {"cfg", "exp", "exp_cfg", "experiment", "config"}


def parameters(path: Path):
    """``(function, parameter, annotation source or None, line)`` of every function in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                yield node.name, a.arg, ast.unparse(a.annotation) if a.annotation else None, node.lineno


def test_only_the_job_edges_take_the_experiment_config():
    wrong = []
    for p in sources(PLATFORM) + sources(REPO / "sweeps"):
        rel = str(p.relative_to(REPO))
        if rel in EXPERIMENT_EDGES or rel.startswith(("sweeps/", f"asva_platform/{DEV}/")):
            continue
        wrong += [
            f"{rel}:{line} {fn}({arg}: {ann})"
            for fn, arg, ann, line in parameters(p)
            if ann and "ExperimentConfig" in ann
        ]
    assert not wrong, "\n".join(wrong)


def test_no_config_parameter_is_untyped_or_any():
    """A config passed by hand is a section or the experiment, and says which (no ``cfg: Any``)."""
    wrong = []
    for layer in ("asva_platform", "sweeps"):
        for p in sources(REPO / layer):
            wrong += [
                f"{p.relative_to(REPO)}:{line} {fn}({arg}: {ann})"
                for fn, arg, ann, line in parameters(p)
                if (arg in CONFIG_NAMES or arg.endswith("_cfg")) and (ann is None or ann == "Any")
            ]
    assert not wrong, "\n".join(wrong)
