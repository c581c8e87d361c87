"""What an evaluation sweep costs in GPU time, from its config alone: the clips it generates, the sampler steps
and guidance branches per clip, the UNet's and VAE's FLOPs (``flops.sampling_flops_per_clip``), at a peak
FLOP/s and an assumed MFU. Generation dominates: the metric networks run once per clip and are not counted."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from asva_model.config import ModelConfig
from asva_model.data.config import SamplingConfig
from asva_platform.planning import flops as flops_mod

AVSYNC15_TEST_VIDEOS = 150
"""AVSync15's test split (shared/reference/asva.md); the paper scores 3 windows of each."""


def clips_scored(test_videos: int, max_videos: int, windows_per_video: int) -> int:
    """Clips one evaluation generates: ``max_videos`` of the ``test_videos`` (all when 0), ``windows_per_video``
    each (``test_videos`` 0: unknown, AVSync15's count)."""
    videos = test_videos or AVSYNC15_TEST_VIDEOS
    return (min(videos, max_videos) if max_videos else videos) * windows_per_video


@dataclass(frozen=True)
class EvaluationPlan:
    clips: int
    """Clips generated per trial (test videos x windows per video)."""
    scales: tuple[float, ...]
    """Audio guidance scales, one trial per scale and seed."""
    seeds: int
    steps: int
    """Sampler steps per clip."""
    tflops_per_clip: dict[str, float]
    """Forward TFLOPs of one clip, by guidance scale."""
    peak_tflops: float
    mfu: float
    gpu_hours: float
    """Total over every trial; 0 when the peak is unknown."""

    def to_dict(self) -> dict:
        return {**asdict(self), "tflops_per_clip": dict(self.tflops_per_clip)}


def evaluation_plan(
    model_cfg: ModelConfig,
    sampling_cfg: SamplingConfig,
    steps: int,
    clips: int,
    scales: tuple[float, ...],
    seeds: int,
    peak_flops: float,
    mfu: float,
) -> EvaluationPlan:
    """GPU-hours of generating ``clips`` clips at every scale in ``scales`` with ``seeds`` seeds each."""
    per_clip = {
        str(s): flops_mod.sampling_flops_per_clip(model_cfg, sampling_cfg, steps, 1 if s == 1.0 else 2)
        for s in scales
    }
    total = clips * seeds * sum(per_clip.values())
    hours = total / (peak_flops * mfu) / 3600 if peak_flops > 0 and mfu > 0 else 0.0
    return EvaluationPlan(
        clips=clips,
        scales=tuple(scales),
        seeds=seeds,
        steps=steps,
        tflops_per_clip={k: v / 1e12 for k, v in per_clip.items()},
        peak_tflops=peak_flops / 1e12,
        mfu=mfu,
        gpu_hours=hours,
    )


def render_evaluation(p: EvaluationPlan, gpu_name: str) -> str:
    scales = " / ".join(f"{float(s):g}" for s in p.scales)
    per_clip = " / ".join(f"{v:,.1f}" for v in p.tflops_per_clip.values())
    trials = len(p.scales) * p.seeds
    cost = f"{p.gpu_hours:.1f} GPU-hours" if p.gpu_hours else "unknown (no peak FLOP/s for this GPU)"
    return (
        f"evaluation: {trials} trials (audio guidance {scales} x {p.seeds} seeds) x {p.clips} clips, "
        f"{p.steps} sampler steps; {per_clip} TFLOP per clip; on {gpu_name} at {p.peak_tflops:g} TFLOP/s peak "
        f"and MFU {p.mfu:g}: {cost} (generation only; the metric networks add a little)"
    )
