"""Learning benchmark: does the toy recipe learn to animate in sync with the audio?

Runs the toy recipe (configs/toy.yaml) end to end through the real jobs on the local stack, exactly as
`make demo` does (``asva_platform.dev.demo.run_toy``): VAE pretraining, synthetic data, Ray Data preprocessing,
TorchTrainer + DeepSpeed training, the Tune guidance sweep and the evaluation job. Then it reads:

* ``vae_psnr_db``: the pretrained VAE's held-out reconstruction PSNR;
* ``loss_true`` / ``loss_other_audio`` / ``loss_null_audio``: the trained model's held-out denoising loss
  with each window's own audio, another clip's, and the null audio, at identical noise and timesteps
  (the training run's final validation), and ``loss_gap_t``: the paired t-statistic of other - true;
* ``sync_by_scale``: Sync with the clip's own audio per audio-guidance scale, mean and 95% CI; ``sync_gt``;
  at the best scale ``sync_shifted`` (the same audio shifted) and ``win_rate_vs_shifted``; the paired gain
  of the best scale over scale 1 with its 95% CI;
* ``wall_minutes`` and ``cpu_minutes`` (the whole machine's CPU time over the run: on a quiet machine, the
  recipe's).

The targets (docs/toy.md) are printed next to the figures; nothing is asserted. Results go to stdout and
bench/results/learn.json. ``python -m bench learn`` or ``python -m bench.bench_learn [--clips-per-class N]``.
"""

from __future__ import annotations

import argparse
import os
import time

from asva_model.metrics.picture import CHANNELS
from asva_platform.dev import stack
from asva_platform.dev.demo import DEFAULT_CLIPS_PER_CLASS, REPO, run_toy
from asva_platform.dev.services import apply_env
from bench.common import write_results
from sweeps.report import setting_interval

TARGETS = {
    "vae_psnr_db": 25.0,
    "loss_gap_t": 5.0,
    "sync_best": 0.62,  # 85% of the ground truth's 0.72
    "win_rate_vs_shifted": 0.85,  # at the best scale
    "win_rate_scale_1": 0.70,  # without guidance: the model follows its audio before it is pushed
    "frame0_psnr_db": 30.0,  # generated frame 0 against the conditioning frame, through the mp4
    "frame0_psnr_min_db": 26.0,  # the worst clip's
    "colour_drift": 2.0,  # |later frames' colour change from frame 0 beyond the GT's|, per channel, /255
    "wall_minutes": 25.0,
}
"""What the toy recipe should reach (issue 28, docs/toy.md); printed beside the figures, never asserted."""


def parse_args(argv: list[str]):

    p = argparse.ArgumentParser(prog="bench_learn", description=__doc__.splitlines()[0])
    p.add_argument(
        "--clips-per-class", type=int, default=DEFAULT_CLIPS_PER_CLASS, help="synthetic clips per class"
    )
    p.add_argument("--max-steps", type=int, default=0, help="training steps (0 = the recipe's)")
    p.add_argument("--name", default="bench-learn", help="training run name (re-using one resumes it)")
    return p.parse_args(argv)


def summarize(run, wall_s: float, cpu_s: float) -> dict:
    """The benchmark's figures from one toy run."""
    m = run.train.get("validation", {})
    comp = run.sweep.get("comparison") or {}
    rows = {float(r["value"]): r for r in comp.get("rows", [])}
    best = rows.get(float(comp["best"])) if comp.get("best") is not None else None
    return {
        "vae_psnr_db": run.vae["psnr_db"],
        "vae_psnr_random_init_db": run.vae["psnr_random_init_db"],
        "vae_scaling_factor": run.vae["scaling_factor"],
        "train_steps": run.train.get("final_step"),
        "loss_true": m.get("val_loss_true"),
        "loss_other_audio": m.get("val_loss_other_audio"),
        "loss_null_audio": m.get("val_loss_null_audio"),
        "loss_gap_t": m.get("val_loss_gap_t"),
        "loss_win_rate": m.get("val_audio_win_rate"),
        "sync_by_scale": {
            str(v): {
                "mean": r["mean"],
                "seeds": r.get("seeds", 1),
                **dict(zip(("ci_low", "ci_high"), setting_interval(r))),
            }
            for v, r in sorted(rows.items())
        },
        "best_scale": comp.get("best"),
        "sync_gt": best["gt"] if best else None,
        "sync_shifted": best["shifted"] if best else None,
        "win_rate_vs_shifted": best["win_rate"] if best else None,
        "win_rate_ci": [best["win_rate_ci_low"], best["win_rate_ci_high"]] if best else None,
        "sync_gain_best_vs_baseline": best["gain"] if best else None,
        "sync_gain_ci": [best["gain_ci_low"], best["gain_ci_high"]] if best else None,
        "num_clips": best["num_clips"] if best else None,
        "win_rate_by_scale": {str(v): r["win_rate"] for v, r in sorted(rows.items())},
        "frame0_psnr_db": _picture(rows, "frame0_psnr", "frame0_psnr_min"),
        "colour_error": _picture(rows, *(f"colour_error_{c}" for c in CHANNELS)),
        "colour_drift": _picture(rows, *(f"colour_drift_{c}" for c in CHANNELS)),
        "lead_s": {str(v): r.get("lead_s") for v, r in sorted(rows.items())},
        "lag_s": comp.get("lags", {}),
        "eval_metrics": run.evaluate.get("metrics", {}),
        "stage_minutes": {k: round(v / 60, 2) for k, v in run.stage_seconds.items()},
        "wall_minutes": round(wall_s / 60, 2),
        "cpu_minutes": round(cpu_s / 60, 2),
        "targets": TARGETS,
    }


def _picture(rows: dict, *keys: str) -> dict:
    """Per scale: the comparison row's picture figures ``keys`` (frame 0's PSNR, colour per channel)."""
    return {str(v): [r.get(k) for k in keys] for v, r in sorted(rows.items())}


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def table(out: dict) -> str:
    lines = [f"{'figure':<28} {'value':>22}   target"]

    def row(key: str, value, target: str = "") -> None:
        lines.append(f"{key:<28} {value:>22}   {target}")

    row("vae_psnr_db", _fmt(out["vae_psnr_db"]), f">= {TARGETS['vae_psnr_db']}")
    best = str(out["best_scale"]) if out["best_scale"] is not None else None
    for key in ("loss_true", "loss_other_audio", "loss_null_audio"):
        row(key, "-" if out[key] is None else f"{out[key]:.5f}")
    row("loss_gap_t", _fmt(out["loss_gap_t"]), f">= {TARGETS['loss_gap_t']}")
    for scale, s in out["sync_by_scale"].items():
        target = f">= {TARGETS['sync_best']} (best)" if scale == best else ""
        row(f"sync @ scale {scale}", f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]", target)
    gain = out["sync_gain_ci"]
    row(
        "gain best vs scale 1",
        f"{_fmt(out['sync_gain_best_vs_baseline'])}"
        + (f" [{gain[0]:.3f}, {gain[1]:.3f}]" if gain and gain[0] is not None else ""),
        "> 0, CI above 0",
    )
    row("best_scale", _fmt(out["best_scale"]))
    row("sync_shifted (best)", _fmt(out["sync_shifted"]))
    row("sync_gt", _fmt(out["sync_gt"]))
    ci = out["win_rate_ci"]
    row(
        "win_rate_vs_shifted (best)",
        _fmt(out["win_rate_vs_shifted"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""),
        f">= {TARGETS['win_rate_vs_shifted']}",
    )
    for scale, rate in out["win_rate_by_scale"].items():
        target = f">= {TARGETS['win_rate_scale_1']}" if float(scale) == 1.0 else ""
        row(f"win rate @ scale {scale}", _fmt(rate), target)
    for scale, (mean, worst) in out["frame0_psnr_db"].items():
        row(
            f"frame 0 dB @ {scale} (min)",
            f"{_fmt(mean)} ({_fmt(worst)})",
            f">= {TARGETS['frame0_psnr_db']} ({TARGETS['frame0_psnr_min_db']})",
        )
    for kind in ("colour_drift", "colour_error"):
        for scale, rgb in out[kind].items():
            target = f"|each| <= {TARGETS['colour_drift']}" if kind == "colour_drift" else ""
            row(f"{kind} RGB @ {scale}", " ".join("-" if v is None else f"{v:+.1f}" for v in rgb), target)
    for scale, lead in out["lead_s"].items():
        row(f"lead vs GT (s) @ {scale}", "-" if lead is None else f"{lead:+.3f}")
    row("wall_minutes", _fmt(out["wall_minutes"]), f"<= {TARGETS['wall_minutes']}")
    row("cpu_minutes", _fmt(out["cpu_minutes"]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import psutil

    # The jobs run on the local stack's Ray with its token (settings.client_env), not on a benchmark's own Ray:
    # bench.common.local_ray_defaults (a fresh token of its own) does not apply here.
    args = parse_args(argv)
    settings = stack.StackSettings.from_env()
    apply_env(os.environ, settings.client_env())
    os.chdir(REPO)
    t0, cpu0 = time.monotonic(), psutil.cpu_times()
    stack.up(settings)
    run = run_toy(settings, args.clips_per_class, args.max_steps, name=args.name)
    cpu1 = psutil.cpu_times()
    busy = sum(getattr(cpu1, f) - getattr(cpu0, f) for f in ("user", "system", "nice", "irq", "softirq"))
    out = summarize(run, time.monotonic() - t0, busy)
    path = write_results("learn", out)
    print(table(out))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
