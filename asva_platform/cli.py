"""The ``asva`` command: one CLI with subcommands.

asva stack up|down|status        local S3 server + MLflow server + Ray head (--nodes N: N Ray nodes)
asva config show|validate        resolved experiment config (YAML, with field docs)
asva synth                       write a synthetic AVSync15 (real layout, truly synchronized)
asva pretrain-vae --config ... --out SD_DIR
                                 train a small VAE on synthetic frames (toy recipe) into SD_DIR/vae
asva model-info                  parameter counts of a model config (built on the meta device)
asva plan --config ... --nodes 4 --gpus-per-node 8 --gpu-memory-gb 80
                                 memory per GPU by ZeRO stage, fit, checkpoint and cache sizes, time, GPU-hours
asva tiny-inputs --out DIR       a tiny synthetic dataset + random tiny weights; prints their overrides
asva submit STAGE --config ... [-- JOB FLAGS]
                                 submit preprocess|train|sweep|evaluate|generate as a Ray job
asva jobs list|status|logs|stop  follow Ray jobs
asva compare RUN [RUN ...]       side-by-side videos of runs (or a sweep's children) as one HTML page
asva fetch SOURCE... --dest DIR  download the paper's weights and dataset, checked against pinned sha256s
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asva_platform import config as cfg
from asva_platform import submit
from asva_platform.dev import stack
from asva_platform.errors import UserError, run_guarded
from asva_platform.experiment import load_experiment


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (configs/...)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-4")


def cmd_stack(args: argparse.Namespace) -> int:
    settings = stack.StackSettings.from_env(args.state_dir)
    if args.nodes:
        settings.ray_nodes = args.nodes
    if args.action == "up":
        stack.up(settings)
        print(f"MLflow UI: {settings.mlflow_url}   Ray dashboard: {settings.dashboard_url}")
        print(f"state: {settings.state_dir}/  (use `asva stack env` for the client environment)")
    elif args.action == "down":
        stack.down(settings)
    elif args.action == "env":
        print(settings.shell_env())  # endpoints and the paths of the stack's key and token, never a secret
    else:
        health = stack.status(settings)
        for name, ok in health.items():
            print(f"{name:<7} {'up' if ok else 'down'}")
        return 0 if all(health.values()) else 1
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.config, args.overrides)
    if args.action == "show":
        print(cfg.dump_yaml(experiment, with_docs=args.docs), end="")
    else:
        print(f"ok: {args.config}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    sub = submit.build_submission(
        args.stage, args.config, args.overrides, args.submission_id or "", flags=tuple(args.job_flags)
    )
    job_id = submit.submit(sub, args.address, num_gpus=args.entrypoint_num_gpus)
    print(f"submitted {job_id}: {sub.entrypoint}", flush=True)
    if args.no_wait:
        return 0
    status = submit.wait(job_id, args.address, follow=not args.quiet)
    print(f"job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.action == "list":
        for row in submit.list_jobs(args.address):
            print(f"{row['submission_id']:<44} {row['status']:<10} {row['entrypoint']}")
        return 0
    if not args.job_id:
        raise SystemExit(f"asva jobs {args.action}: a job id is required")
    if args.action == "status":
        print(submit.job_status(args.job_id, args.address))
    elif args.action == "logs":
        if args.follow:
            status = submit.wait(args.job_id, args.address, follow=True)
            return 0 if status == "SUCCEEDED" else 1
        print(submit.job_logs(args.job_id, args.address), end="")
    elif args.action == "stop":
        print("stopping" if submit.stop_job(args.job_id, args.address) else "already finished")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from asva_model.info import describe, model_info  # torch-heavy: only this subcommand pays for it

    experiment = load_experiment(args.config, args.overrides)
    # which protocol the config's numbers would follow (docs/metrics.md, "Reproducing the paper")
    info = {
        **model_info(experiment.model),
        "protocol": experiment.protocol,
        "protocol_quirks": experiment.protocol_quirks(),
    }
    if args.json:
        print(json.dumps(info))
    else:
        quirks = ", ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in info["protocol_quirks"].items())
        print(f"{describe(info)}\nprotocol: {info['protocol']} ({quirks})")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from asva_platform.planning import plan as planning  # torch-heavy: only this subcommand pays for it
    from asva_platform.planning.evaluation import clips_scored, evaluation_plan, render_evaluation  # as above

    experiment = load_experiment(args.config, args.overrides)
    t = experiment.train
    cluster = planning.ClusterSpec(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        gpu_memory_gb=args.gpu_memory_gb,
        gpu_name=args.gpu,
        gpu_tflops=args.gpu_tflops,
        mfu=args.mfu,
        network_gbps=args.network_gbps,
        storage_gbps=args.storage_gbps,
        reserve_gb=args.reserve_gb,
        mean_clip_s=args.mean_clip_s,
    )
    shape = planning.TrainingShape(
        precision=args.precision or t.precision,
        micro_batch=args.micro_batch or t.batch_size_per_worker,
        global_batch=args.global_batch or t.global_batch_size,
        steps=t.max_steps,
        checkpoint_every=t.checkpoint_every,
        grad_ckpt=experiment.model.gradient_checkpointing if args.grad_ckpt is None else args.grad_ckpt,
        zero=planning.memory.ZeroSettings(
            reduce_bucket_size=t.reduce_bucket_size,
            max_live_parameters=t.zero3_max_live_parameters,
            max_reuse_distance=t.zero3_max_reuse_distance,
        ),
    )
    cache = planning.CacheShape(experiment.preprocess.windows_per_clip, experiment.preprocess.flips)
    stages = (args.zero,) if args.zero is not None else (0, 1, 2, 3)
    result = planning.plan(experiment.model, experiment.sampling, shape, cache, cluster, stages)
    g = experiment.generate
    evaluation = evaluation_plan(
        experiment.model,
        experiment.sampling,
        g.num_inference_steps,
        args.eval_clips
        or clips_scored(0, experiment.eval.max_videos, experiment.sampling.test_clips_per_video),
        tuple(args.eval_scales or [g.audio_guidance_scale]),
        args.eval_seeds,
        cluster.peak_flops,
        cluster.mfu,
    )
    if args.json:
        print(json.dumps({**result.to_dict(), "evaluation": evaluation.to_dict()}))
    else:
        print(planning.render(result))
        print(render_evaluation(evaluation, args.gpu))
    return 0


def cmd_pretrain_vae(args: argparse.Namespace) -> int:
    from asva_platform.dev.vae_pretrain import pretrain_vae  # torch-heavy: only this subcommand pays for it

    experiment = load_experiment(args.config, args.overrides)
    try:
        report = pretrain_vae(
            experiment.model,
            experiment.vae_pretrain,
            experiment.dataset.classes,
            experiment.sampling.image_size,
            Path(args.out) / "vae",
            log=lambda m: print(m, flush=True),
        )
    except ValueError as err:
        print(f"asva pretrain-vae: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        verb = "reused" if report.reused else f"trained in {report.seconds:.0f} s:"
        print(
            f"{verb} {report.folder}: held-out PSNR {report.psnr_db:.2f} dB (random init "
            f"{report.psnr_random_init_db:.2f} dB); use with\n  model.pretrained_sd={Path(args.out).resolve()} "
            + " ".join(report.overrides())
        )
    return 0


def cmd_tiny_inputs(args: argparse.Namespace) -> int:
    from asva_platform.dev.fixtures import tiny_inputs  # torch-heavy: only this subcommand pays for it

    _, overrides = tiny_inputs(
        args.out,
        clips_per_class=args.clips_per_class,
        max_duration=args.max_duration,
        image_size=args.image_size,
    )
    line = " ".join(overrides)
    if any(" " in o for o in overrides):
        raise UserError(
            f"--out {args.out}: the printed overrides must be shell words; choose a path without spaces"
        )
    (Path(args.out) / "overrides.txt").write_text(line + "\n")
    print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asva", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="local stack: S3 server, MLflow server, Ray head")
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.add_argument("--state-dir", default=None, help="state directory (default .asva or $ASVA_STATE_DIR)")
    p.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="Ray nodes on this machine (head + workers, each $ASVA_RAY_NUM_CPUS CPUs; default "
        "$ASVA_RAY_NODES or 1): try multi-node behaviour locally",
    )
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("config", help="show or validate an experiment config")
    p.add_argument("action", choices=["show", "validate"])
    _add_config_args(p)
    p.add_argument("--docs", action="store_true", help="comment every key with its docstring")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("model-info", help="parameter counts of a model config (built on the meta device)")
    p.add_argument(
        "--config", default=None, help="experiment YAML (its `model` section); default: the paper's model"
    )
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. model.unet.block_out_channels=[32,64]"
    )
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser(
        "plan",
        help="what a training run takes on a cluster: memory per GPU, fit, checkpoints, cache, time; and "
        "the GPU-hours of evaluating it",
        description="Per-GPU memory by ZeRO stage (parameters, gradients, optimizer states, ZeRO buffers, "
        "activations), whether it fits and the largest micro-batch that does, checkpoint and latent-cache "
        "sizes and the time to write them, step time at a stated MFU, wall-clock and GPU-hours for "
        "train.max_steps at the config's global batch (docs/training.md, 'Planning a cluster run').",
    )
    _add_config_args(p)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--gpu-memory-gb", type=float, default=80.0, help="usable memory per GPU, GB")
    p.add_argument(
        "--gpu", default="A100", help="GPU name, for its peak TFLOP/s (A100, H100, H200, L40S ...)"
    )
    p.add_argument(
        "--gpu-tflops", type=float, default=0.0, help="dense 16-bit peak TFLOP/s per GPU (overrides --gpu)"
    )
    p.add_argument("--mfu", type=float, default=0.35, help="model FLOPs utilisation assumed for step time")
    p.add_argument("--network-gbps", type=float, default=25.0, help="collective bandwidth per GPU, GB/s")
    p.add_argument("--storage-gbps", type=float, default=1.0, help="object-storage bandwidth per node, GB/s")
    p.add_argument("--reserve-gb", type=float, default=1.5, help="per GPU: CUDA context and allocator slack")
    p.add_argument("--mean-clip-s", type=float, default=6.0, help="mean clip length, for the cache size")
    p.add_argument(
        "--zero", type=int, choices=[0, 1, 2, 3], default=None, help="one ZeRO stage (default: all)"
    )
    p.add_argument(
        "--grad-ckpt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gradient checkpointing (default: model.gradient_checkpointing)",
    )
    p.add_argument(
        "--precision", choices=["bf16", "fp16", "fp32"], default=None, help="default: train.precision"
    )
    p.add_argument("--micro-batch", type=int, default=0, help="default: train.batch_size_per_worker")
    p.add_argument("--global-batch", type=int, default=0, help="default: the config's global batch")
    p.add_argument(
        "--eval-scales",
        type=lambda v: [float(x) for x in v.split(",")],
        default=None,
        help="evaluation estimate: audio guidance scales, comma-separated (default: generate.audio_guidance_scale)",
    )
    p.add_argument("--eval-seeds", type=int, default=1, help="evaluation estimate: seeds per scale")
    p.add_argument(
        "--eval-clips",
        type=int,
        default=0,
        help="evaluation estimate: clips per trial (default: eval.max_videos or AVSync15's 150 test videos, "
        "x sampling.test_clips_per_video)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "pretrain-vae",
        help="train a small VAE on synthetic frames (toy recipe)",
        description="Train model.vae's geometry on frames of the synthetic dataset's classes "
        "(dataset.classes) at sampling.image_size, per the vae_pretrain section; save it "
        "as OUT/vae (diffusers layout) with its measured scaling factor and held-out PSNR.",
    )
    _add_config_args(p)
    p.add_argument("--out", required=True, help="SD folder to write vae/ into (model.pretrained_sd)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.set_defaults(func=cmd_pretrain_vae)

    p = sub.add_parser(
        "tiny-inputs",
        help="a tiny synthetic AVSync15 and random tiny weights, to try every stage",
        description="Write a synthetic AVSync15 (OUT/data) and random-init weights of the tiny "
        "geometry in their real formats (OUT/weights); print, on one line, the dotted "
        "overrides that point configs/tiny.yaml at them (also in OUT/overrides.txt). "
        "Plumbing: every stage runs on them, nothing is learned (the toy recipe, "
        "`make demo`, learns).",
    )
    p.add_argument("--out", required=True, help="folder to write into (reused if already there)")
    p.add_argument("--clips-per-class", type=int, default=1)
    p.add_argument("--max-duration", type=float, default=3.0, help="seconds per synthetic clip")
    p.add_argument("--image-size", type=int, default=32)
    p.set_defaults(func=cmd_tiny_inputs)

    address_help = (
        "Ray job server URL (default $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else http://127.0.0.1:8265)"
    )
    p = sub.add_parser(
        "submit",
        help="submit a stage as a Ray job",
        epilog="Stage flags go after `--`, e.g. `asva submit generate --config c.yaml -- --image "
        "s3://b/first.png --audio s3://b/a.wav --prompt dog_barking --out s3://b/out.mp4`.",
    )
    p.add_argument("stage", choices=["preprocess", "train", "sweep", "evaluate", "generate"])
    p.add_argument("--config", required=True, help="experiment YAML (for `sweep`: the sweep YAML)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-4")
    p.add_argument("--address", default=None, help=address_help)
    p.add_argument("--submission-id", default=None, help="job id (default: asva-<stage>-<time>-<random>)")
    p.add_argument("--entrypoint-num-gpus", type=float, default=0, help="GPUs reserved for the driver")
    p.add_argument("--no-wait", action="store_true", help="return after submitting")
    p.add_argument("--quiet", action="store_true", help="wait without streaming logs")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list, inspect, follow or stop Ray jobs")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?", default=None)
    p.add_argument("-f", "--follow", action="store_true", help="logs: stream until the job ends")
    p.add_argument("--address", default=None, help=address_help)
    p.set_defaults(func=cmd_jobs)

    # Subcommands implemented by other modules take their raw arguments.
    for name, help_text in [
        ("synth", "write a synthetic AVSync15 dataset"),
        ("compare", "side-by-side comparison page of runs (or a sweep's children)"),
        ("fetch", "download and verify the paper's weights and dataset (pinned sha256s)"),
    ]:
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


PASSTHROUGH = {
    "synth": ("asva_platform.dev.synth", "main"),
    "compare": ("asva_platform.compare", "main"),
    "fetch": ("asva_platform.fetch.cli", "main"),
}


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        module, fn = PASSTHROUGH[argv[0]]
        return int(getattr(importlib.import_module(module), fn)(argv[1:]) or 0)
    job_flags: list[str] = []
    if argv and argv[0] == "submit" and "--" in argv:  # what follows `--` goes to the job as is
        cut = argv.index("--")
        argv, job_flags = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.job_flags = job_flags
    # Dotted overrides may come before or after options; argparse leaves late ones unparsed.
    stray = [u for u in unknown if u.startswith("-") or "=" not in u]
    if stray or (unknown and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or unknown)}")
    if unknown:
        args.overrides = [*args.overrides, *unknown]
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    return run_guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
