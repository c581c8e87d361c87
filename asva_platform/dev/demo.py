"""`make demo`: the toy recipe (configs/toy.yaml, docs/toy.md) end to end, as Ray jobs on the local stack.

1. `asva stack up` (S3 server, MLflow server, Ray head on 127.0.0.1);
2. the toy inputs: a synthetic AVSync15 of the recipe's four strongly audio-driven classes (uploaded to
   the S3 server), random-init UNet / audio-encoder / text files, and a VAE pretrained on synthetic frames
   (`asva pretrain-vae`; the run stops if it reconstructs below its PSNR floor);
3. preprocess -> train (2 workers, ZeRO-2, every UNet module) -> guidance sweep (scales 1 / 4 / 8, with
   the shifted-audio control and CIs) -> evaluate, each submitted as a Ray job with `asva submit`
   semantics and waited for; every stage's `--json` result feeds the next;
4. the comparison page of the sweep (videos side by side, with their audio, "play all" in step), logged
   to its parent run;
5. what to look at: the figures, and deep links into the MLflow UI (training run, the sweep's runs table,
   its parent run, its Sync plot, its settings table, the comparison page, the evaluation's per-class table),
   also written to ``<state dir>/demo-toy/links.json`` for `make ui-check`.

Re-running reuses what exists: the dataset, the VAE, the latent cache (same inputs -> same cache id), the
training run (same name -> resumes at its final step), the sweep (Tune restore) and the generated clips.
Environment: DEMO_CLIPS_PER_CLASS (default 288), DEMO_MAX_STEPS (default: the recipe's train.max_steps).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from asva_platform import compare, submit
from asva_platform.dev import stack
from asva_platform.dev.fixtures import toy_inputs
from asva_platform.dev.services import apply_env
from asva_platform.errors import UserError, run_guarded
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage, join

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/toy.yaml"
SWEEP = "sweeps/guidance_scale_toy.yaml"
DEFAULT_CLIPS_PER_CLASS = 288


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run_stage(stage: str, config: str, overrides: list[str], flags: tuple[str, ...] = ()) -> dict:
    """Submit one stage as a Ray job (with the job's own ``flags``), stream its logs, and return its `--json`
    result."""
    sub = submit.build_submission(stage, config, overrides, flags=(*flags, "--json"))
    banner(f"{stage}: {sub.entrypoint}")
    job_id = submit.submit(sub)
    status = submit.wait(job_id, follow=True)
    if status != "SUCCEEDED":
        raise UserError(f"{stage} job {job_id} {status}; see `asva jobs logs {job_id}`")
    result = submit.last_json_line(submit.job_logs(job_id))
    if not result:
        raise UserError(f"{stage} job {job_id} printed no JSON result")
    return result


@dataclass
class ToyRun:
    """What one run of the toy recipe produced (every stage's `--json` result)."""

    overrides: list[str]
    """The dotted overrides that point configs/toy.yaml at the inputs (the same for every stage)."""
    vae: dict
    preprocess: dict
    train: dict
    sweep: dict
    evaluate: dict
    compare_page: str = ""
    """Local path of the comparison page."""
    compare: dict = field(default_factory=dict)
    """`asva compare`'s result (where the page was logged, its MLflow link)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)


def toy_inputs_on_s3(settings: stack.StackSettings, clips_per_class: int) -> tuple[list[str], dict]:
    """Toy inputs (dataset uploaded to the S3 server, weights local); returns overrides and the VAE report."""

    experiment = load_experiment(str(REPO / CONFIG))
    work = (settings.state_dir / "demo-toy").resolve()
    banner(f"toy inputs ({clips_per_class} clips/class of {', '.join(experiment.dataset.classes)}) in {work}")
    try:
        data_root, overrides, report = toy_inputs(work, experiment, clips_per_class)
    except ValueError as err:  # e.g. the VAE below its PSNR floor: stop before any job runs
        raise UserError(f"toy inputs: {err}") from None
    s3_root = f"s3://{settings.bucket}/datasets/synth-toy-{clips_per_class}"
    storage = Storage(settings.s3_url)
    if not storage.exists(join(s3_root, "train.txt")):
        files = storage.upload_dir(data_root, s3_root)
        print(f"uploaded {len(files)} files to {s3_root}")
    overrides = [f"dataset.root={s3_root}" if o.startswith("dataset.root=") else o for o in overrides]
    return overrides, report.to_json()


def run_toy(
    settings: stack.StackSettings,
    clips_per_class: int = DEFAULT_CLIPS_PER_CLASS,
    max_steps: int = 0,
    name: str = "demo-toy",
) -> ToyRun:
    """The whole toy recipe on a running local stack; ``max_steps`` 0 keeps the recipe's."""

    times: dict[str, float] = {}
    t = time.monotonic()
    inputs, vae = toy_inputs_on_s3(settings, clips_per_class)
    times["inputs"] = time.monotonic() - t

    def stage(key: str, config: str, overrides: list[str]) -> dict:
        t0 = time.monotonic()
        out = run_stage(key, config, overrides)
        times[key] = time.monotonic() - t0
        return out

    run = [*inputs, f"name={name}"]
    steps = [f"train.max_steps={max_steps}"] if max_steps else []
    pre = stage("preprocess", CONFIG, run)
    train = stage("train", CONFIG, [*run, f"train.cache={pre['cache_id']}", "train.zero_stage=2", *steps])
    sweep = stage("sweep", SWEEP, [f"checkpoint={train['run_id']}", *[f"base.{o}" for o in inputs]])
    evaluate = stage("evaluate", CONFIG, [*run, f"eval.checkpoint={train['run_id']}"])
    page = settings.state_dir.resolve() / "demo-toy" / "compare.html"
    banner(f"comparison page of the sweep: {page}")
    t0 = time.monotonic()
    page_result = compare.run([sweep["parent_run_id"], "--config", str(REPO / CONFIG), "--out", str(page)])
    times["compare"] = time.monotonic() - t0
    return ToyRun(inputs, vae, pre, train, sweep, evaluate, str(page), page_result, times)


LINKS_FILE = "links.json"
"""Beside the demo's work files: the links it printed (what `make ui-check` opens)."""
LINK_LABELS = {
    "training": "training run (loss, samples over steps, description)",
    "runs": "the sweep's runs table (parent with one child per trial)",
    "parent": "the sweep's parent run (description, best trial, summary tables)",
    "plot": "the sweep's Sync plot (mean, 95% bootstrap CI, ground truth and shifted-audio lines)",
    "settings": "per-setting table (mean over clips x seeds, bootstrap CI, paired gain)",
    "compare": "side-by-side comparison page (play all)",
    "evaluation": "the evaluation's per-class table",
}


def links_of(
    sweep: dict, compare_result: dict, train: dict | None = None, evaluate: dict | None = None
) -> dict:
    """The MLflow UI links the demo prints, from the stages' --json results (empty ones left out)."""
    links = {
        "training": (train or {}).get("mlflow_url", ""),
        **sweep.get("links", {}),
        "compare": compare_result.get("mlflow_url", ""),
        "evaluation": (evaluate or {}).get("mlflow_url", ""),
    }
    return {k: links[k] for k in LINK_LABELS if links.get(k)}


def write_links(links: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LINKS_FILE
    path.write_text(json.dumps(links, indent=1))
    return path


def describe(run: ToyRun, settings: stack.StackSettings) -> str:
    """What the user should look at, with the figures that say whether the model follows its audio."""
    lines = [
        f"MLflow server: {settings.mlflow_url} (the links below open the views that matter)",
        f"VAE: {run.vae['psnr_db']:.1f} dB held-out PSNR (random init {run.vae['psnr_random_init_db']:.1f} dB)",
        f"training: {run.train['final_step']} steps, run {run.train['run_id']} (experiment avsyncd-toy)",
    ]
    val = run.train.get("validation") or {}
    if "val_loss_gap_t" in val:
        lines.append(
            f"  held-out denoising loss: own audio {val['val_loss_true']:.4f}, another clip's audio "
            f"{val['val_loss_other_audio']:.4f}, null audio {val['val_loss_null_audio']:.4f}; "
            f"paired t {val['val_loss_gap_t']:.1f}, own audio lower on {val['val_audio_win_rate']:.0%} of windows"
        )
    comp = run.sweep.get("comparison") or {}
    if comp.get("rows"):
        seeds = max(r.get("seeds", 1) for r in comp["rows"])
        lines.append(
            f"guidance sweep ({run.sweep.get('experiment')}): Sync with its own audio, mean over clips x "
            f"{seeds} seed(s) with a bootstrap 95% CI; gain = paired vs the lowest scale; win = own audio "
            "beats the same audio shifted"
        )
        for r in comp["rows"]:
            gain = (
                "gain n/a"
                if r.get("gain") is None
                else f"gain {r['gain']:+.3f} [{r['gain_ci_low']:+.3f}, {r['gain_ci_high']:+.3f}]"
            )
            low, high = (
                (r["boot_ci_low"], r["boot_ci_high"])
                if r.get("boot_ci_low") is not None
                else (r["ci_low"], r["ci_high"])
            )
            lines.append(
                f"  scale {r['value']:>4g}: Sync {r['mean']:.3f} [{low:.3f}, {high:.3f}]  "
                f"shifted {r['shifted']:.3f}  win {r['win_rate']:.0%}  {gain}  ground truth {r['gt']:.3f}"
            )
            if r.get("frame0_psnr") is not None:
                drift = " ".join(f"{r[f'colour_drift_{c}']:+.1f}" for c in "RGB")
                lead = "" if r.get("lead_s") is None else f"; motion leads the GT's by {r['lead_s']:+.3f} s"
                lines.append(
                    f"      picture: frame 0 {r['frame0_psnr']:.1f} dB (worst {r['frame0_psnr_min']:.1f}) against "
                    f"the conditioning frame; colour drift beyond the GT's (RGB /255) {drift}{lead}"
                )
        lines.append(f"  best scale: {comp.get('best')}")
        for c in comp.get("per_class", []):
            lines.append(f"  {c['class']}: best scale {c['best']}, worst {c['worst']}")
    lines.append(f"comparison page: {run.compare_page} (also logged to the sweep's parent run)")
    links = links_of(run.sweep, run.compare, run.train, run.evaluate)
    if links:
        lines.append("in the MLflow UI:")
        lines += [f"  {LINK_LABELS[k]}: {url}" for k, url in links.items()]
    lines.append("stop the stack with `make stack-down`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    settings = stack.StackSettings.from_env()
    apply_env(os.environ, settings.client_env())
    os.chdir(REPO)
    banner("local stack")
    stack.up(settings)
    clips = int(os.environ.get("DEMO_CLIPS_PER_CLASS", str(DEFAULT_CLIPS_PER_CLASS)))
    steps = int(os.environ.get("DEMO_MAX_STEPS", "0"))
    run = run_toy(settings, clips, steps)
    links = write_links(
        links_of(run.sweep, run.compare, run.train, run.evaluate), settings.state_dir.resolve() / "demo-toy"
    )
    banner(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    print(describe(run, settings))
    print(f"(links also in {links}; `make ui-check` opens them in a headless browser)")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
