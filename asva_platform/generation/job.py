"""The generation job (``python -m jobs.generate``): image + audio (+ class prompt) -> mp4 with that audio.

One item = an image file (any size: centre-cropped and resized to ``sampling.image_size`` like dataset
frames), an audio file (any rate/channels: mono, resampled to 16 kHz, the 2 s from ``audio_start``), a
prompt (a key of ``model.text_encodings``, or a class folder name such as ``dog_barking``) and an output
path. Paths may be local or ``s3://``. Batch mode reads items from a CSV (header
``image,audio,prompt,out[,audio_start]``) or JSON-lines file; relative paths in it are relative to the
list file. Items run in this process or on Ray actors (``eval.parallel``, ``eval.num_workers``), with the
``generate`` section's steps, guidance scales and seed. Every input is checked before any model is loaded or
Ray is started.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asva_model.config import ModelConfig
from asva_model.data.audio import resample, waveform_to_mel, window_samples
from asva_model.data.avsync15 import default_prompt
from asva_model.data.config import SamplingConfig
from asva_model.data.sampling import transform_frames
from asva_model.text import load_text_encodings
from asva_platform.actors import map_on_actors
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.errors import UserError
from asva_platform.experiment import ExperimentConfig
from asva_platform.inference.animator import AnimatorWorker
from asva_platform.inference.checkpoints import resolve_checkpoint
from asva_platform.inference.config import GenerateConfig
from asva_platform.inference.weights import localize_model_paths
from asva_platform.progress import Progress
from asva_platform.storage import Storage, StorageConfig, is_s3, join, parse_uri

LIST_COLUMNS = ("image", "audio", "prompt", "out")


@dataclass(frozen=True)
class GenerateItem:
    image: str
    """Image file (local path or s3://)."""
    audio: str
    """Audio file (wav/flac/ogg; local path or s3://)."""
    prompt: str
    """Text-encoding key or class folder name."""
    out: str
    """Output mp4 (local path or s3://)."""
    audio_start: float = 0.0
    """Seconds into the audio file where the 2 s window starts."""


def _resolve(base: str, path: str) -> str:
    if is_s3(path) or Path(path).is_absolute() or not base:
        return path
    return join(base, path)


def read_item_list(uri: str, storage: Storage) -> list[GenerateItem]:
    """Items from a CSV or JSON-lines list file; errors name the file and line."""
    text = storage.read_bytes(uri).decode("utf-8")
    base = uri.rsplit("/", 1)[0] if is_s3(uri) else str(Path(parse_uri(uri).key).parent)
    if uri.endswith((".jsonl", ".json")):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise UserError(f"{uri}: line {n}: not valid JSON ({err.msg})") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in LIST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"{uri}: header must name {', '.join(LIST_COLUMNS)}[, audio_start]; missing {missing}"
            )
        rows = [(n, row) for n, row in enumerate(reader, start=2)]
    items = []
    for n, row in rows:
        if not isinstance(row, dict) or any(not str(row.get(c) or "").strip() for c in LIST_COLUMNS):
            raise UserError(f"{uri}: line {n}: needs non-empty {', '.join(LIST_COLUMNS)}")
        try:
            start = float(row.get("audio_start") or 0.0)
        except (TypeError, ValueError):
            raise UserError(
                f"{uri}: line {n}: audio_start must be a number, got {row.get('audio_start')!r}"
            ) from None
        items.append(
            GenerateItem(
                _resolve(base, row["image"].strip()),
                _resolve(base, row["audio"].strip()),
                row["prompt"].strip(),
                _resolve(base, row["out"].strip()),
                start,
            )
        )
    if not items:
        raise UserError(f"{uri}: no items")
    return items


def prompt_key(prompt: str, known: set[str]) -> str:
    """``prompt`` itself if it has an encoding, else its text form as a class folder name."""
    if prompt in known:
        return prompt
    if default_prompt(prompt) in known:
        return default_prompt(prompt)
    raise UserError(f"prompt {prompt!r} has no text encoding (known: {', '.join(sorted(known)[:6])}...)")


def check_items(model_cfg: ModelConfig, items: list[GenerateItem], storage: Storage) -> list[GenerateItem]:
    """Every input exists, every prompt has an encoding, outputs are unique .mp4 paths; returns the items
    with prompts normalised to encoding keys."""
    outs = [i.out for i in items]
    dupes = sorted({o for o in outs if outs.count(o) > 1})
    if dupes:
        raise UserError(f"two items write the same output: {dupes[0]}")
    for item in items:
        for what, path in (("image", item.image), ("audio", item.audio)):
            if not storage.exists(path):
                raise UserError(f"{what} {path}: not found")
        if not item.out.endswith(".mp4"):
            raise UserError(f"output {item.out}: must end in .mp4")
    with tempfile.TemporaryDirectory(prefix="asva-text-") as scratch:
        model_cfg = localize_model_paths(model_cfg, storage, str(scratch))
        if not model_cfg.text_encodings:
            raise UserError(
                "model.text_encodings: required (AVSyncD is conditioned on the class prompt's encoding)"
            )
        try:
            known = set(load_text_encodings(model_cfg.text_encodings).prompts)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"model.text_encodings: {err}") from None
    return [GenerateItem(i.image, i.audio, prompt_key(i.prompt, known), i.out, i.audio_start) for i in items]


@dataclass
class GenerateSpec:
    """What a worker needs; plain data, so it travels to Ray actors."""

    model: ModelConfig
    sampling: SamplingConfig
    generate: GenerateConfig
    storage: StorageConfig
    checkpoint: ResolvedCheckpoint
    """The resolved checkpoint."""
    device: str = "auto"
    """`cuda`, `cpu` or `auto`."""
    num_threads: int = 0
    """torch CPU threads (0 = torch's default)."""


class GenerateWorker(AnimatorWorker):
    """Loads AVSyncD once; ``run(item)`` writes one mp4."""

    def __init__(self, spec: GenerateSpec) -> None:
        super().__init__(spec, "asva-generate-")
        self.spec = spec

    def run(self, item: GenerateItem) -> dict:
        t0 = time.perf_counter()
        s = self.spec.sampling
        inputs = self.scratch / "inputs"
        image = load_image(self.storage.localize(item.image, inputs), s)
        waveform = load_audio_window(self.storage.localize(item.audio, inputs), s, item.audio_start)
        frames = self.animator.animate(image, waveform_to_mel(waveform, s), item.prompt)
        local = self.animator.write(self.scratch / "out.mp4", frames, waveform)
        self.storage.upload_file(local, item.out)  # atomic, local or S3
        local.unlink()
        return {**asdict(item), "frames": int(frames.shape[0]), "seconds": round(time.perf_counter() - t0, 3)}


@dataclass
class Result:
    outputs: list[dict]
    """One entry per item: image, audio, prompt, out, audio_start, frames, seconds."""
    checkpoint: ResolvedCheckpoint
    seconds: float
    workers: int
    parallel: bool

    def to_json(self) -> dict:
        return {
            "outputs": self.outputs,
            "checkpoint": self.checkpoint.to_json(),
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "parallel": self.parallel,
        }

    def summary_line(self) -> str:
        return (
            f"generate: {len(self.outputs)} video(s) from {self.checkpoint.label} with {self.workers} worker(s) "
            f"in {self.seconds:.1f} s"
        )


def run(
    experiment: ExperimentConfig, items: list[GenerateItem], log: Callable[[str], None] = print
) -> Result:
    """Check everything, then generate every item (Ray actors when ``eval.parallel``). The job edge: the sections
    the workers use go on as a :class:`GenerateSpec`."""
    t0 = time.perf_counter()
    e = experiment.eval
    storage = Storage.from_config(experiment.storage)
    checkpoint = resolve_checkpoint(e.checkpoint, storage, experiment.tracking.resolved_uri())
    items = check_items(experiment.model, items, storage)
    for parent in sorted({i.out.rsplit("/", 1)[0] for i in items if is_s3(i.out)}):
        storage.check_reachable(parent)

    def make_spec(device: str, threads: int = 0) -> GenerateSpec:
        return GenerateSpec(
            experiment.model,
            experiment.sampling,
            experiment.generate,
            experiment.storage,
            checkpoint,
            device,
            threads,
        )

    parallel = e.parallel and len(items) > 1
    if parallel:
        outputs, workers, _ = map_on_actors(
            e, experiment.cluster, GenerateWorker, make_spec, items, log, "video"
        )
    else:
        worker, outputs, workers = GenerateWorker(make_spec(e.device)), [], 1
        progress = Progress("video", len(items))
        for i, item in enumerate(items, start=1):
            outputs.append(worker.run(item))
            log(f"wrote {item.out}; {progress.line(i)}")
    return Result(outputs, checkpoint, time.perf_counter() - t0, workers, parallel)


def load_image(path: str | Path, sampling) -> np.ndarray:
    """An image file as (3, H, W) float32 in [0, 1], centre-cropped and resized like dataset frames."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise UserError(f"image {path}: cannot read ({type(err).__name__})") from None
    return transform_frames([rgb], sampling)[:, 0]


def load_audio_window(path: str | Path, sampling, start: float = 0.0) -> np.ndarray:
    """``clip_samples`` mono samples at the sampling rate from ``start`` s of an audio file (zero-padded if the
    file ends sooner)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.LibsndfileError) as err:
        raise UserError(f"audio {path}: cannot read ({str(err).splitlines()[0][:120]})") from None
    if data.shape[0] == 0:
        raise UserError(f"audio {path}: no samples")
    if start < 0 or start >= data.shape[0] / rate:
        raise UserError(f"audio {path}: start {start} s is outside the file ({data.shape[0] / rate:.2f} s)")
    mono = resample(data.mean(axis=1), rate, sampling.audio_sample_rate, sampling.resampler)
    return window_samples(mono, 0.0, start, sampling)
