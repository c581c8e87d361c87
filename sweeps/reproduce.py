"""``make reproduce`` / ``python -m sweeps.reproduce --weights DIR``: the paper's evaluation of its released
checkpoint, our row printed beside the paper's.

1. Reads the overrides `asva fetch` wrote (``DIR/asva-overrides.txt``: SD-1.5, ImageBind, the released UNet as
   ``model.init_unet``, the metric networks, the class text encodings, AVSync15) and loads
   ``sweeps/reproduce_avsync15.yaml`` with them: ``configs/avsync15.yaml`` under ``protocol: authors``, audio
   guidance 1 / 4 / 8 x seeds 0 / 1 / 2, every metric. A bad path or key stops here, before any job.
2. Prints `asva plan`'s estimate of the GPU-hours the nine evaluations take (``--gpu``, ``--mfu``).
3. Runs the sweep: as a Ray job on the cluster ``RAY_ADDRESS`` / the local stack names (default), or in this
   process (``--here``, on the Ray this process starts or joins).
4. Reads each trial's metrics from MLflow and prints, per guidance scale, the paper's numbers (README after the
   July 2024 data update; supplementary Table 10) and ours, as mean and spread over the seeds.

``--dry-run`` stops after 2. Extra dotted overrides go to the sweep (``base.eval.max_videos=10`` for a quick
look). Exit code 2 for bad input (nothing started).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from asva_platform.errors import UserError, run_guarded
from asva_platform.fetch.cli import OVERRIDES_FILE
from asva_platform.planning.flops import peak_flops
from sweeps.spec import load_sweep

SWEEP = Path(__file__).resolve().parent / "reproduce_avsync15.yaml"
SCALE_KEY = "generate.audio_guidance_scale"
COLUMNS = ("FID", "IA", "IT", "FVD", "AlignSync", "RelSync")
"""The paper's columns (supplementary Table 10's order); lower is better for FID and FVD."""
PAPER: dict[str, dict[float, dict[str, float]]] = {
    "paper, README (released ckpt)": {
        1.0: {"FVD": 323.06, "AlignSync": 22.21},
        4.0: {"FVD": 300.82, "AlignSync": 22.64},
        8.0: {"FVD": 375.02, "AlignSync": 22.70},
    },
    "paper, supp. Table 10": {
        1.0: {"FID": 12.1, "IA": 38.36, "IT": 30.34, "FVD": 382.7, "AlignSync": 22.25, "RelSync": 44.81},
        4.0: {"FID": 11.7, "IA": 38.53, "IT": 30.45, "FVD": 349.1, "AlignSync": 22.62, "RelSync": 45.52},
        8.0: {"FID": 11.7, "IA": 37.99, "IT": 30.27, "FVD": 420.7, "AlignSync": 22.74, "RelSync": 45.88},
    },
}
"""AVSync15's published numbers (shared/reference/asva.md, 4.2): the README's FVD / AlignSync of the released
37k-step checkpoint after the July 2024 data update, and the supplement's Table 10 (before it; FVDs sit ~50
higher). Expect about +-50 FVD between evaluations from sampling alone."""


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="make reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="weights", help="the folder `asva fetch all --dest` filled")
    p.add_argument("--sweep", default=str(SWEEP), help="the sweep file (default: %(default)s)")
    p.add_argument("--gpu", default="H100", help="GPU name for the estimate's peak TFLOP/s")
    p.add_argument("--mfu", type=float, default=0.35, help="model FLOPs utilisation the estimate assumes")
    p.add_argument("--dry-run", action="store_true", help="check the inputs, print the estimate, run nothing")
    p.add_argument("--here", action="store_true", help="run the sweep in this process, not as a Ray job")
    p.add_argument(
        "overrides", nargs="*", help="more dotted overrides for the sweep (base.<key> for the config)"
    )
    return p.parse_args(argv)


def fetched_overrides(weights: Path) -> list[str]:
    """The config overrides `asva fetch` wrote, as sweep overrides of the base config."""
    path = weights / OVERRIDES_FILE
    if not path.is_file():
        raise UserError(
            f"--weights {weights}: no {OVERRIDES_FILE}; run `asva fetch all --dest {weights}` first"
        )
    return [f"base.{o}" for o in path.read_text().split()]


def test_clips(loaded) -> int:
    """Clips each trial scores: the test list's videos (``eval.max_videos`` of them, where set) x windows."""
    from asva_platform.planning.evaluation import clips_scored  # torch-heavy

    base = loaded.base
    test_list = Path(base.dataset.root) / base.dataset.test_list
    videos = (
        len([ln for ln in test_list.read_text().splitlines() if ln.strip()]) if test_list.is_file() else 0
    )
    return clips_scored(videos, base.eval.max_videos, base.sampling.test_clips_per_video)


def estimate(loaded, clips: int, gpu: str, mfu: float) -> str:
    from asva_platform.planning.evaluation import evaluation_plan, render_evaluation  # torch-heavy

    base = loaded.base
    plan = evaluation_plan(
        base.model,
        base.sampling,
        base.generate.num_inference_steps,
        clips,
        tuple(loaded.spec.search_space[SCALE_KEY]["grid"]),
        len(loaded.spec.seeds),
        peak_flops(gpu, "fp16"),
        mfu,
    )
    return render_evaluation(plan, gpu)


def run(loaded, overrides: list[str], here: bool) -> str:
    """Run the loaded sweep (``here``: in this process, else as a Ray job of its file and ``overrides``); returns
    its MLflow parent run id."""
    if here:
        from sweeps.tune_runner import run_sweep  # Ray and Tune: only this path pays for them

        return run_sweep(loaded).parent_run_id
    from asva_platform.dev.demo import run_stage  # the stack's job submission, as `make demo` uses

    return run_stage("sweep", str(loaded.path), overrides)["parent_run_id"]


def trial_metrics(parent_run_id: str, tracking_uri: str) -> dict[float, list[dict[str, float]]]:
    """Per guidance scale, each seed's evaluation metrics (``eval/<name>``) from the sweep's child runs."""
    from mlflow.tracking import MlflowClient

    from sweeps.mlflow_sweep import list_child_runs  # imports Ray Tune: only after the sweep ran

    client = MlflowClient(tracking_uri=tracking_uri)
    children = list_child_runs(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id)
    out: dict[float, list[dict[str, float]]] = {}
    for child in children:
        scale = float(child.data.params[SCALE_KEY])
        metrics = {k.removeprefix("eval/"): v for k, v in child.data.metrics.items() if k.startswith("eval/")}
        out.setdefault(scale, []).append(metrics)
    return out


def side_by_side(ours: dict[float, list[dict[str, float]]], clips: int) -> str:
    """The paper's rows and ours per guidance scale; ours as mean +- standard deviation over the seeds."""
    width = 31
    lines = [f"{'audio guidance':>14}  {'':{width}}" + "".join(f"{c:>15}" for c in COLUMNS)]
    for scale in sorted(ours):
        for source, table in PAPER.items():
            row = table.get(scale, {})
            cells = "".join(f"{row[c]:>15.2f}" if c in row else f"{'-':>15}" for c in COLUMNS)
            lines.append(f"{scale:>14g}  {source:{width}}{cells}")
        seeds = ours[scale]
        cells = ""
        for c in COLUMNS:
            values = [m[c] for m in seeds if c in m]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells += f"{f'{statistics.mean(values):.2f} +-{spread:.2f}':>15}" if values else f"{'-':>15}"
        lines.append(f"{scale:>14g}  {f'ours ({len(seeds)} seeds x {clips} clips)':{width}}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = [*fetched_overrides(Path(args.weights)), *args.overrides]
    loaded = load_sweep(args.sweep, overrides)  # validates the sweep and its base config: nothing runs yet
    if loaded.base.protocol != "authors":
        print(f"warning: the config follows protocol {loaded.base.protocol!r}, not the paper's `authors`")
    clips = test_clips(loaded)
    print(estimate(loaded, clips, args.gpu, args.mfu), flush=True)
    if args.dry_run:
        return 0
    parent = run(loaded, overrides, args.here)
    ours = trial_metrics(parent, loaded.base.tracking.resolved_uri())
    print(f"\nAVSync15, the released checkpoint under protocol {loaded.base.protocol} (MLflow run {parent}):")
    print(side_by_side(ours, clips))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
