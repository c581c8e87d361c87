"""Small real inputs for tests, benchmarks and demos: a synthetic AVSync15 and tiny weights in the real
on-disk formats (nothing is downloaded).

* :func:`tiny_inputs`: random-init weights of the tiny geometry (``configs/model/tiny.yaml``; plumbing
  tests: every stage runs, nothing is learned);
* :func:`tiny_eval_overrides`: the same plus tiny random-init metric networks (every metric's code path);
* :func:`toy_inputs`: the toy recipe's inputs (``configs/toy.yaml``): the recipe's synthetic classes and a
  VAE pretrained on synthetic frames, so a model trained on them can learn audio-driven motion.
"""

from __future__ import annotations

import json
from pathlib import Path

from asva_model.config import ModelConfig
from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt
from asva_model.metrics.networks.tiny import save_tiny_metric_networks
from asva_model.pretrained import make_tiny_pretrained
from asva_platform import config as cfgmod
from asva_platform.dev.synth import synthesize
from asva_platform.dev.vae_pretrain import pretrain_vae
from asva_platform.experiment import ExperimentConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_MODEL_YAML = CONFIGS / "model" / "tiny.yaml"


def tiny_model_section() -> dict:
    """The tiny geometry, as written in ``configs/model/tiny.yaml`` (its ``model:`` section)."""
    return cfgmod.load_raw(TINY_MODEL_YAML)["model"]


def tiny_model_config(**fields) -> ModelConfig:
    """A :class:`ModelConfig` of the tiny geometry, with ``fields`` set on top."""
    return cfgmod.from_dict(ModelConfig, {**tiny_model_section(), **fields}, str(TINY_MODEL_YAML))


def tiny_model_overrides() -> list[str]:
    """Dotted overrides that give any experiment config the tiny geometry (compact values: no spaces, so a
    shell can pass them around unquoted)."""
    return [
        f"model.{key}={json.dumps(value, separators=(',', ':'))}"
        for key, value in cfgmod.flatten(tiny_model_section()).items()
    ]


def tiny_inputs(
    work_dir: str | Path,
    clips_per_class: int = 2,
    seed: int = 0,
    max_duration: float = 10.0,
    image_size: int = 64,
) -> tuple[str, list[str]]:
    """Write (or reuse) ``<work_dir>/data`` and ``<work_dir>/weights``; returns the dataset root and the
    dotted overrides that point an experiment config at them (tiny model, ``image_size`` frames)."""
    work = Path(work_dir)
    data = work / "data"
    synthesize(data, clips_per_class=clips_per_class, seed=seed, max_duration=max_duration)
    weights = work / "weights"
    model = make_tiny_pretrained(
        weights, prompts=tuple(default_prompt(c) for c in AVSYNC15_CLASSES), model_cfg=tiny_model_config()
    )
    overrides = [
        f"dataset.root={data}",
        *tiny_model_overrides(),
        f"model.pretrained_sd={model.pretrained_sd}",
        f"model.audio_encoder_weights={model.audio_encoder_weights}",
        f"model.text_encodings={model.text_encodings}",
        f"sampling.image_size=[{image_size},{image_size}]",
    ]
    return str(data), overrides


def toy_inputs(
    work_dir: str | Path,
    experiment: ExperimentConfig,
    clips_per_class: int,
    seed: int = 0,
    max_duration: float = 4.0,
    log=print,
):
    """Write (or reuse) the toy recipe's inputs under ``work_dir`` for ``experiment``: a synthetic AVSync15 of
    ``dataset.classes``, random-init UNet/audio-encoder/text files of ``model``'s geometry, and a VAE pretrained
    per ``vae_pretrain`` (raises ValueError below its PSNR floor).
    Returns ``(data root, overrides, VAEPretrainReport)``; the overrides carry the measured scaling factor."""
    work = Path(work_dir)
    data = work / "data"
    summary = synthesize(
        data,
        clips_per_class=clips_per_class,
        seed=seed,
        max_duration=max_duration,
        classes=experiment.dataset.classes,
    )
    log(
        f"synthetic data: {summary.num_clips} clips ({summary.train} train / {summary.test} test) at {data}"
        + (" (reused)" if summary.reused else f" in {summary.seconds:.0f} s")
    )
    weights = work / "weights"
    model = make_tiny_pretrained(
        weights,
        prompts=tuple(default_prompt(c) for c in AVSYNC15_CLASSES),
        model_cfg=experiment.model,
        write_vae=False,
    )
    report = pretrain_vae(
        experiment.model,
        experiment.vae_pretrain,
        experiment.dataset.classes,
        experiment.sampling.image_size,
        Path(model.pretrained_sd) / "vae",
        log=log,
    )
    if report.reused:
        log(f"pretrained VAE reused: {report.psnr_db:.2f} dB, scaling factor {report.scaling_factor:.5f}")
    overrides = [
        f"dataset.root={data}",
        f"model.pretrained_sd={model.pretrained_sd}",
        f"model.audio_encoder_weights={model.audio_encoder_weights}",
        f"model.text_encodings={model.text_encodings}",
        f"model.null_text_encoding={model.null_text_encoding}",
        *report.overrides(),
    ]
    return str(data), overrides, report


def tiny_eval_overrides(
    work_dir: str | Path,
    clips_per_class: int = 2,
    max_duration: float = 3.0,
    image_size: int = 64,
    steps: int = 2,
) -> list[str]:
    """Write (or reuse) everything under ``work_dir``; returns dotted overrides for an experiment config:
    the tiny model, ``image_size`` frames, ``steps`` PNDM steps and every metric on tiny networks (with
    resize targets small enough for a CPU)."""
    work = Path(work_dir)
    _, overrides = tiny_inputs(
        work, clips_per_class=clips_per_class, max_duration=max_duration, image_size=image_size
    )
    nets = save_tiny_metric_networks(work / "metric_nets")
    return overrides + [
        f"model.null_text_encoding={work / 'weights' / 'null_text_encoding.pt'}",
        f"generate.num_inference_steps={steps}",
        f"eval.metrics.inception_weights={nets.inception_weights}",
        f"eval.metrics.i3d_weights={nets.i3d_weights}",
        f"eval.metrics.imagebind_weights={nets.imagebind_weights}",
        f"eval.metrics.imagebind_bpe={nets.imagebind_bpe}",
        f"eval.metrics.imagebind_num_heads={list(nets.imagebind_num_heads)}",
        f"eval.metrics.avsync_classifier={nets.avsync_classifier}",
        "eval.metrics.fid_image_size=80",
        "eval.metrics.fvd_image_size=64",
        f"eval.metrics.batch_size={nets.batch_size}",
    ]
