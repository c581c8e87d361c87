"""What `asva submit` uploads: every package file, none of the venv/state/data."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray._private.runtime_env.packaging import _get_excludes

from asva_platform.errors import UserError
from asva_platform.submit import WORKING_DIR_EXCLUDES, build_submission
from tests.output import own_lines

REPO = Path(__file__).resolve().parents[2]


def test_working_dir_keeps_every_package_file_and_drops_state():
    excluded = _get_excludes(REPO, WORKING_DIR_EXCLUDES)
    package_files = [
        p
        for pkg in ("asva_platform", "asva_model", "jobs", "sweeps")
        for p in (REPO / pkg).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    assert package_files and not [p for p in package_files if excluded(p)]
    for dropped in (
        ".venv/bin/python",
        ".asva/stack.json",
        "data/AVSync15/train.txt",
        "out/x.png",
        "a/clip.mp4",
    ):
        assert excluded(REPO / dropped), dropped


def test_submission_carries_no_secrets_and_validates_first(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    sub = build_submission(
        "train", "configs/tiny.yaml", ["train.lr=2e-4", "train.cache=0123abcd"], submission_id="x"
    )
    assert (
        sub.entrypoint == "python -m jobs.train --config configs/tiny.yaml train.lr=2e-4 train.cache=0123abcd"
    )
    assert "s3cr3t-value" not in repr(sub)


GENERATE_FLAGS = ("--image", "first.png", "--audio", "a.wav", "--prompt", "dog_barking", "--out", "o.mp4")


def test_stage_flags_reach_the_entrypoint_after_the_jobs_own_check():
    sub = build_submission(
        "generate",
        "configs/tiny.yaml",
        ["generate.audio_guidance_scale=6"],
        submission_id="g",
        flags=GENERATE_FLAGS,
    )
    assert sub.entrypoint == (
        "python -m jobs.generate --config configs/tiny.yaml generate.audio_guidance_scale=6 "
        + " ".join(GENERATE_FLAGS)
    )


@pytest.mark.parametrize(
    ("stage", "config", "overrides", "flags", "says"),
    [
        ("generate", "configs/tiny.yaml", [], ("--image", "first.png"), "single mode needs all of"),
        (
            "evaluate",
            "configs/tiny.yaml",
            [],
            ("--checkpointt", "x"),
            "unrecognized arguments: --checkpointt",
        ),
        ("sweep", "sweeps/guidance_scale_tiny.yaml", ["num_samplez=3"], (), "num_samplez"),
        # what the job would refuse on the cluster, refused here first
        ("train", "configs/tiny.yaml", ["train.lr=2e-4"], (), "train.cache: set a cache_id or URI"),
        (
            "evaluate",
            "configs/tiny.yaml",
            ["eval.metrics.sync_shift_s=5"],
            (),
            "eval.metrics.sync_shift_s: must be below",
        ),
    ],
)
def test_the_job_rejects_bad_arguments_before_anything_is_submitted(stage, config, overrides, flags, says):
    with pytest.raises(UserError, match="nothing submitted") as err:
        build_submission(stage, config, overrides, submission_id="x", flags=flags)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_cli_passes_what_follows_the_double_dash_to_the_job(capsys):
    from asva_platform.cli import main

    # no cluster is contacted: the job's own check fails first
    assert main(["submit", "generate", "--config", "configs/tiny.yaml", "--", "--imag", "x.png"]) == 2
    err = own_lines(capsys.readouterr().err)[-1]
    assert err.startswith("error: jobs.generate rejected its arguments, nothing submitted:")
    assert err.endswith("unrecognized arguments: --imag")  # not taken as --image: no abbreviations


@pytest.mark.parametrize(
    ("stage", "args"),
    [
        ("preprocess", ["--config", "configs/tiny.yaml"]),
        ("train", ["--config", "configs/tiny.yaml", "train.lr=1e-4", "train.cache=0123abcd"]),
        ("evaluate", ["--config", "configs/tiny.yaml", "--checkpoint", "init"]),
        ("sweep", ["sweeps/guidance_scale_tiny.yaml", "checkpoint=init"]),
    ],
)
def test_check_validates_and_starts_nothing(stage, args, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}  # Ray would create its session folder here
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", f"jobs.{stage}", *args, "--check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("ok: ")
    assert not list(tmp_path.iterdir()), "a Ray session was created"


def test_the_result_line_is_found_behind_progress_bar_cursor_moves():
    from asva_platform.submit import last_json_line

    log = (
        'step 1\n\x1b[A\x1b[A{"final_step": 2, "checkpoint_uri": "s3://b/r/step_00000002"}\n'
        "\x1b[36m(TrainController pid=1)\x1b[0m done\n"
    )
    assert last_json_line(log) == {"final_step": 2, "checkpoint_uri": "s3://b/r/step_00000002"}
    assert last_json_line("no result here\n{not json}\n") == {}
