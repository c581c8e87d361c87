"""Small real inputs for evaluation tests, benchmarks and demos: a synthetic AVSync15, the tiny AVSyncD
weights and tiny random-init metric networks, all in their real on-disk formats (nothing is downloaded).
Scores from the tiny networks are meaningless; the code paths are the real ones."""

from __future__ import annotations

from pathlib import Path

from asva_model.metrics.networks.tiny import save_tiny_metric_networks
from asva_platform.preprocess.fixtures import tiny_inputs


def tiny_eval_overrides(work_dir: str | Path, clips_per_class: int = 2, max_duration: float = 3.0,
                        image_size: int = 64, steps: int = 2) -> list[str]:
    """Write (or reuse) everything under ``work_dir``; returns dotted overrides for an experiment config:
    the tiny model, ``image_size`` frames, ``steps`` PNDM steps and every metric on tiny networks (with
    resize targets small enough for a CPU)."""
    work = Path(work_dir)
    _, overrides = tiny_inputs(work, clips_per_class=clips_per_class, max_duration=max_duration,
                               image_size=image_size)
    nets = save_tiny_metric_networks(work / "metric_nets")
    return overrides + [
        f"model.null_text_encoding={work / 'weights' / 'null_text_encoding.pt'}",
        f"eval.num_inference_steps={steps}",
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
