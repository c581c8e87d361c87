"""What `asva submit` uploads: every package file, none of the venv/state/data."""

from __future__ import annotations

from pathlib import Path

from ray._private.runtime_env.packaging import _get_excludes

from asva_platform.submit import WORKING_DIR_EXCLUDES, build_submission

REPO = Path(__file__).resolve().parents[2]


def test_working_dir_keeps_every_package_file_and_drops_state():
    excluded = _get_excludes(REPO, WORKING_DIR_EXCLUDES)
    package_files = [p for pkg in ("asva_platform", "asva_model", "jobs", "sweeps")
                     for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts]
    assert package_files and not [p for p in package_files if excluded(p)]
    for dropped in (".venv/bin/python", ".asva/stack.json", "data/AVSync15/train.txt", "out/x.png", "a/clip.mp4"):
        assert excluded(REPO / dropped), dropped


def test_submission_carries_no_secrets_and_validates_first(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    sub = build_submission("train", "configs/tiny.yaml", ["train.lr=2e-4"], submission_id="x")
    assert sub.entrypoint == "python -m jobs.train --config configs/tiny.yaml train.lr=2e-4"
    assert "s3cr3t-value" not in repr(sub)
