"""Small real inputs for the preprocessing tests, benchmarks and demos: a synthetic AVSync15 and tiny
weights in the real on-disk formats (nothing is downloaded).

* :func:`tiny_inputs`: random-init weights (plumbing tests: every stage runs, nothing is learned);
* :func:`toy_inputs`: the toy recipe's inputs (``configs/toy.yaml``): the recipe's synthetic classes and a
  VAE pretrained on synthetic frames, so a model trained on them can learn audio-driven motion.
"""

from __future__ import annotations

from pathlib import Path

from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt


def tiny_inputs(work_dir: str | Path, clips_per_class: int = 2, seed: int = 0, max_duration: float = 10.0,
                image_size: int = 64) -> tuple[str, list[str]]:
    """Write (or reuse) ``<work_dir>/data`` and ``<work_dir>/weights``; returns the dataset root and the
    dotted overrides that point an experiment config at them (tiny model, ``image_size`` frames)."""
    from asva_model.data.synth import synthesize
    from asva_model.pretrained import make_tiny_pretrained

    work = Path(work_dir)
    data = work / "data"
    synthesize(data, clips_per_class=clips_per_class, seed=seed, max_duration=max_duration)
    weights = work / "weights"
    model = make_tiny_pretrained(weights, prompts=tuple(default_prompt(c) for c in AVSYNC15_CLASSES))
    overrides = [
        f"dataset.root={data}",
        "model.preset=tiny",
        f"model.pretrained_sd={model.pretrained_sd}",
        f"model.audio_encoder_weights={model.audio_encoder_weights}",
        f"model.text_encodings={model.text_encodings}",
        f"sampling.image_size=[{image_size}, {image_size}]",
    ]
    return str(data), overrides


def toy_inputs(work_dir: str | Path, exp, clips_per_class: int, seed: int = 0, max_duration: float = 4.0,
               log=print):
    """Write (or reuse) the toy recipe's inputs under ``work_dir`` for experiment config ``exp``: a synthetic
    AVSync15 of ``exp.dataset.classes``, random-init UNet/audio-encoder/text files of ``exp.model``'s
    geometry, and a VAE pretrained per ``exp.vae_pretrain`` (raises ValueError below its PSNR floor).
    Returns ``(data root, overrides, VAEPretrainReport)``; the overrides carry the measured scaling factor."""
    from asva_model.data.synth import synthesize
    from asva_model.pretrained import make_tiny_pretrained
    from asva_model.vae_pretrain import pretrain_vae

    work = Path(work_dir)
    data = work / "data"
    summary = synthesize(data, clips_per_class=clips_per_class, seed=seed, max_duration=max_duration,
                         classes=exp.dataset.classes)
    log(f"synthetic data: {summary.num_clips} clips ({summary.train} train / {summary.test} test) at {data}"
        + (" (reused)" if summary.reused else f" in {summary.seconds:.0f} s"))
    weights = work / "weights"
    model = make_tiny_pretrained(weights, prompts=tuple(default_prompt(c) for c in AVSYNC15_CLASSES),
                                 model_cfg=exp.model, write_vae=False)
    report = pretrain_vae(exp.model, exp.vae_pretrain, exp.dataset.classes, exp.sampling.image_size,
                          Path(model.pretrained_sd) / "vae", log=log)
    if report.reused:
        log(f"pretrained VAE reused: {report.psnr_db:.2f} dB, scaling factor {report.scaling_factor:.5f}")
    overrides = [
        f"dataset.root={data}",
        f"model.pretrained_sd={model.pretrained_sd}",
        f"model.audio_encoder_weights={model.audio_encoder_weights}",
        f"model.text_encodings={model.text_encodings}",
        f"model.null_text_encoding={model.null_text_encoding}",
        f"model.vae.scaling_factor={report.scaling_factor!r}",
    ]
    return str(data), overrides, report
