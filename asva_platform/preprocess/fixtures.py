"""Small real inputs for the preprocessing tests, benchmark and demos: a synthetic AVSync15 and tiny
random-init weights in the real on-disk formats (nothing is downloaded)."""

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
