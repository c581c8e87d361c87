"""`make demo`: the whole pipeline on embedded defaults, as Ray jobs on the local stack.

1. `asva stack up` (S3 server, MLflow server, Ray head on 127.0.0.1);
2. a small synthetic AVSync15 (real layout, truly synchronized audio and motion) uploaded to the S3 server,
   and tiny random-init "pretrained" weights in the real formats;
3. preprocess -> train (tiny, 2 workers, ZeRO-2) -> guidance sweep -> evaluate, each submitted as a Ray job
   with `asva submit` semantics and waited for; every stage's `--json` result feeds the next;
4. the MLflow UI URL and the experiment names.

Re-running reuses what exists: the dataset and weights, the latent cache (same inputs -> same cache id, a
no-op), the training run (same name -> resumes at its final step), the sweep (Tune restore).
Environment: DEMO_CLIPS_PER_CLASS (default 2), DEMO_MAX_STEPS (default 30).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from asva_platform import stack, submit
from asva_platform.errors import UserError, run_guarded
from asva_platform.storage import Storage, join

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/tiny.yaml"
SWEEP = "sweeps/guidance_scale_tiny.yaml"


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run_stage(stage: str, config: str, overrides: list[str]) -> dict:
    """Submit one stage as a Ray job, stream its logs, and return its `--json` result."""
    sub = submit.build_submission(stage, config, overrides, flags=("--json",))
    banner(f"{stage}: {sub.entrypoint}")
    job_id = submit.submit(sub)
    status = submit.wait(job_id, follow=True)
    if status != "SUCCEEDED":
        raise UserError(f"{stage} job {job_id} {status}; see `asva jobs logs {job_id}`")
    result = submit.last_json_line(submit.job_logs(job_id))
    if not result:
        raise UserError(f"{stage} job {job_id} printed no JSON result")
    return result


def demo_inputs(settings: stack.StackSettings, clips_per_class: int) -> list[str]:
    """Dataset (uploaded to the S3 server) and tiny weights; returns the overrides pointing at them."""
    from asva_platform.preprocess.fixtures import tiny_inputs

    work = (settings.state_dir / "demo").resolve()
    banner(f"synthetic AVSync15 ({clips_per_class} clips/class) and tiny pretrained weights in {work}")
    data_root, overrides = tiny_inputs(work, clips_per_class=clips_per_class, max_duration=4.0)
    s3_root = f"s3://{settings.bucket}/datasets/synth-avsync15-{clips_per_class}"
    storage = Storage(settings.s3_url)
    if not storage.exists(join(s3_root, "train.txt")):
        files = storage.upload_dir(data_root, s3_root)
        print(f"uploaded {len(files)} files to {s3_root}")
    return [f"dataset.root={s3_root}" if o.startswith("dataset.root=") else o for o in overrides]


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    settings = stack.StackSettings.from_env()
    os.environ.update(settings.client_env())
    os.chdir(REPO)
    banner("local stack")
    stack.up(settings)
    clips = int(os.environ.get("DEMO_CLIPS_PER_CLASS", "2"))
    steps = int(os.environ.get("DEMO_MAX_STEPS", "30"))
    inputs = demo_inputs(settings, clips)

    pre = run_stage("preprocess", CONFIG, [*inputs, "name=demo"])
    train = run_stage("train", CONFIG, [
        *inputs, "name=demo", f"train.cache={pre['cache_id']}", "train.zero_stage=2", "train.num_workers=2",
        f"train.max_steps={steps}", f"train.checkpoint_every={max(steps // 2, 1)}",
    ])
    sweep = run_stage("sweep", SWEEP, [f"checkpoint={train['run_id']}", *[f"base.{o}" for o in inputs]])
    evaluate = run_stage("evaluate", CONFIG, [*inputs, "name=demo", f"eval.checkpoint={train['run_id']}"])

    banner(f"done in {time.monotonic() - t0:.0f}s")
    print(f"MLflow UI: {settings.mlflow_url}")
    print("experiments: preprocess, avsyncd-tiny (training + evaluation), "
          f"{sweep.get('experiment', 'guidance-scale-tiny')} (sweep parent + children)")
    print(f"cache: {pre['cache_uri']}\ncheckpoint: {train['checkpoint_uri']}\n"
          f"evaluation: {', '.join(f'{k}={v}' for k, v in sorted(evaluate.get('metrics', {}).items()))}")
    print("stop the stack with `make stack-down`")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
