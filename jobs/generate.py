"""``python -m jobs.generate --config <file> [--checkpoint REF] (single | --batch LIST) [--json] [overrides]``.

Single: ``--image first.png --audio sound.wav --prompt "dog barking" --out out.mp4 [--audio-start S]``.
Batch: ``--batch items.csv`` (header ``image,audio,prompt,out[,audio_start]``) or ``items.jsonl``; items
run on Ray actors (a GPU each when present) unless ``eval.parallel=false``. Every output is an mp4 with
``sampling.num_frames`` frames at ``sampling.fps`` (H.264) and the 2 s audio window (AAC 16 kHz); REF as
for ``jobs.evaluate`` (default ``eval.checkpoint``). With ``--json`` the last stdout line is one JSON object:
outputs [{image, audio, prompt, out, audio_start, frames, seconds}], checkpoint, seconds, workers, parallel.
"""

from __future__ import annotations

import sys

from asva_platform.errors import UserError, run_guarded
from asva_platform.job_cli import checked_only, job_parser, print_result


def parse_args(argv: list[str] | None):
    p = job_parser("jobs.generate", __doc__, "eval.audio_guidance_scale=8")
    p.add_argument("--checkpoint", default=None, help="init | storage URI | MLflow run id (sets eval.checkpoint)")
    p.add_argument("--image", help="first frame (png/jpg; local or s3://)")
    p.add_argument("--audio", help="audio file (wav/flac/ogg; local or s3://)")
    p.add_argument("--prompt", help="class prompt (a text-encoding key, or a class folder name like dog_barking)")
    p.add_argument("--out", help="output .mp4 (local or s3://)")
    p.add_argument("--audio-start", type=float, default=0.0, help="seconds into the audio where the 2 s window starts")
    p.add_argument("--batch", help="CSV/JSONL list of items (image,audio,prompt,out[,audio_start])")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from asva_platform.config import replace_dotted
    from asva_platform.evaluation.generate_job import GenerateItem, read_item_list, run_generate_job
    from asva_platform.schema import load_experiment
    from asva_platform.storage import Storage

    single = [args.image, args.audio, args.prompt, args.out]
    if bool(args.batch) == any(single):
        raise UserError("give either --batch LIST or all of --image, --audio, --prompt, --out")
    if not args.batch and not all(single):
        raise UserError("single mode needs all of --image, --audio, --prompt, --out")
    cfg = load_experiment(args.config, args.overrides)
    if args.checkpoint:  # set as given: a run id must not go through YAML number parsing
        cfg = replace_dotted(cfg, {"eval.checkpoint": args.checkpoint}, "--checkpoint")
    if checked_only(args, cfg.name):  # the item list itself is read by the job (it may live on the cluster's S3)
        return 0
    if args.batch:
        items = read_item_list(args.batch, Storage.from_config(cfg.storage))
    else:
        items = [GenerateItem(args.image, args.audio, args.prompt, args.out, args.audio_start)]
    result = run_generate_job(cfg, items)
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
