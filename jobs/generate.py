"""``python -m jobs.generate --config <file> [--checkpoint REF] (single | --batch LIST) [--json] [overrides]``.

Single: ``--image first.png --audio sound.wav --prompt "dog barking" --out out.mp4 [--audio-start S]``.
Batch: ``--batch items.csv`` (header ``image,audio,prompt,out[,audio_start]``) or ``items.jsonl``; items
run on Ray actors (a GPU each when present) unless ``eval.parallel=false``. Every output is an mp4 with
``sampling.num_frames`` frames at ``sampling.fps`` (H.264) and the 2 s audio window (AAC 16 kHz); REF as
for ``jobs.evaluate`` (default ``eval.checkpoint``). With ``--json`` the last stdout line is one JSON object:
outputs [{image, audio, prompt, out, audio_start, frames, seconds}], checkpoint, seconds, workers, parallel.
"""

from __future__ import annotations

import argparse
import sys

from asva_platform.errors import UserError, run_guarded
from asva_platform.experiment import ExperimentConfig
from asva_platform.generation import job as generation
from asva_platform.job_cli import StageJob
from asva_platform.storage import Storage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="first frame (png/jpg; local or s3://)")
    p.add_argument("--audio", help="audio file (wav/flac/ogg; local or s3://)")
    p.add_argument(
        "--prompt", help="class prompt (a text-encoding key, or a class folder name like dog_barking)"
    )
    p.add_argument("--out", help="output .mp4 (local or s3://)")
    p.add_argument(
        "--audio-start", type=float, default=0.0, help="seconds into the audio where the 2 s window starts"
    )
    p.add_argument("--batch", help="CSV/JSONL list of items (image,audio,prompt,out[,audio_start])")


def check_arguments(args: argparse.Namespace) -> None:
    single = [args.image, args.audio, args.prompt, args.out]
    if bool(args.batch) == any(single):
        raise UserError("give either --batch LIST or all of --image, --audio, --prompt, --out")
    if not args.batch and not all(single):
        raise UserError("single mode needs all of --image, --audio, --prompt, --out")


def run(experiment: ExperimentConfig, args: argparse.Namespace) -> generation.Result:
    # the item list is read here, not at --check: it may live on the cluster's S3
    if args.batch:
        items = generation.read_item_list(args.batch, Storage.from_config(experiment.storage))
    else:
        items = [generation.GenerateItem(args.image, args.audio, args.prompt, args.out, args.audio_start)]
    return generation.run(experiment, items)


JOB = StageJob(
    "jobs.generate",
    __doc__,
    run,
    override_example="generate.audio_guidance_scale=8",
    add_arguments=add_arguments,
    check_arguments=check_arguments,
    checkpoint_option=True,
)
main = JOB.main


if __name__ == "__main__":
    sys.exit(run_guarded(JOB.main, sys.argv[1:]))
