"""The GPU check (bench/gpu_check.py, run on a GPU by bench/gpu_check.sh) in its CPU dry run: every section's
code path runs with the tiny model and reports sane figures; a failing section leaves the others running.

The dry run uses ``--no-ray``: the unit tier starts no Ray, so the training sections run their step function
in process instead of in a TorchTrainer worker (the TorchTrainer wrapper around it is a thin
``fit``/``report``, exercised by ``bash bench/gpu_check.sh --tiny``). It runs in a subprocess: DeepSpeed
caches its process groups per process, and the one-rank group it builds must not outlive it into other tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

REPO = Path(__file__).resolve().parents[2]


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_dry_run_reports_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gpu_check",
            "--tiny",
            "--no-ray",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    sections = report["sections"]
    assert set(sections) == {"train", "train_grad_ckpt", "sampling", "online_data"}

    for name, ckpt in (("train", False), ("train_grad_ckpt", True)):
        r = sections[name]
        assert r["runner"] == "in process (--no-ray)" and r["gradient_checkpointing"] is ckpt
        assert (r["zero_stage"], r["micro_batch"], r["grad_accum"], r["samples_per_step"]) == (2, 1, 2, 2)
        assert r["timed_steps"] == 2 and r["warmup_steps"] == 1
        for key in (
            "samples_per_s",
            "step_time_s",
            "step_time_median_s",
            "tflops_per_s",
            "flops_per_sample",
            "loss_first",
            "loss_last",
            "trainable_params",
        ):
            assert finite_positive(r[key]), (name, key, r[key])
        assert r["samples_per_s"] * r["step_time_s"] == pytest.approx(2, rel=1e-6)
        assert r["mfu"] is None and r["peak_mem_gib"] is None  # no GPU: "n/a (cpu)"
        assert r["latent_geometry"].startswith("12x4x16x16 latents, 229 audio tokens, 77 text tokens")
    assert sections["train"]["flops_per_sample"] == sections["train_grad_ckpt"]["flops_per_sample"]

    s = sections["sampling"]
    assert s["steps"] == 2 and s["audio_guidance_scale"] == 4.0 and s["unet_evals_per_step"] == 2
    assert s["frames"] == [1, 12, 3, 32, 32] and s["dtype"] == "fp32"
    assert all(finite_positive(s[k]) for k in ("seconds_per_clip", "steps_per_s", "unet_tflops_per_s"))

    o = sections["online_data"]
    assert (
        o["clips"] == 3
        and o["latents_shape"] == [1, 4, 12, 16, 16]
        and o["audio_tokens_shape"] == [1, 229, 32]
    )
    assert all(finite_positive(o[k]) for k in ("decode_clips_per_s", "encode_clips_per_s", "clips_per_s"))
    assert o["clips_per_s"] < min(o["decode_clips_per_s"], o["encode_clips_per_s"])

    summary = proc.stdout[proc.stdout.index("== summary") :]
    assert summary.count("MFU                n/a (cpu)") == 2
    assert (
        summary.count("n/a (cpu)") == 2 * 2 + 2
    )  # MFU + peak memory per training section, 1 per other section
    assert "4 section(s) ok, 0 failed" in summary


def test_a_failing_section_leaves_the_others_running(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    # online_data fails at once (too few clips for a warm-up batch and a timed one); sampling still runs
    rc = gpu_check.main(
        [
            "--tiny",
            "--only",
            "online_data,sampling",
            "--online-clips",
            "1",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ]
    )
    assert rc == 1
    report = json.loads(out.read_text())
    assert set(report["sections"]) == {"sampling"} and set(report["errors"]) == {"online_data"}
    assert "need >= 2 batches" in report["errors"]["online_data"]
    assert finite_positive(report["sections"]["sampling"]["seconds_per_clip"])
    printed = capsys.readouterr().out
    assert (
        "[online_data] FAILED: ValueError" in printed and "1 section(s) ok, 1 failed (online_data)" in printed
    )
