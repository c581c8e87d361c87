"""`eval` config section: what an evaluation generates and scores (checkpoint, split, videos, metrics) and how
the jobs run it (workers, device, outputs). How each clip is generated is the `generate` section's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_model.errors import require
from asva_model.metrics.config import MetricsConfig


@dataclass
class EvalConfig:
    max_videos: int = 0
    """Evaluate at most this many test videos (0 = all), picked round-robin over classes in name order."""
    checkpoint: str = "init"
    """What to evaluate: `init` (the untrained pretrained init), a storage URI or path of an exported UNet
    folder (save_pretrained) or of a Ray Train/DeepSpeed checkpoint, or an MLflow run id of a training run."""
    split: str = "test"
    """Dataset split (or list file relative to dataset.root) whose videos are evaluated."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Which metrics to compute and where their networks' weights live."""
    parallel: bool = True
    """Generate and score clips on Ray actors; False runs everything in the calling process (no Ray)."""
    num_workers: int = 0
    """Ray actors (each loads the model and metric networks once). 0 = one per GPU when the cluster has
    GPUs, else cluster CPUs / cpus_per_worker; never more than the number of videos."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per actor (also its torch thread count)."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """`auto`: a GPU per actor (and for in-process runs) when one is present, else CPU."""
    output_root: str = ""
    """Where generated clips, scores and tables go (s3:// or local); empty = <storage.root>/evals."""
    save_gt_videos: bool = True
    """Also write each window's ground truth as mp4 (12 frames + its audio) for the comparison page."""
    log_to: Literal["checkpoint_run", "new_run"] = "checkpoint_run"
    """When the checkpoint is an MLflow training run: log `eval/*` metrics into that run, or into a new run
    linked to it by the tag asva.evaluated_run. Other checkpoints always get a new run."""

    def __post_init__(self) -> None:
        require(self.max_videos >= 0, "max_videos", "must be >= 0")
        require(
            bool(self.checkpoint.strip()),
            "checkpoint",
            "must not be empty (use `init` for the untrained model)",
        )
        require(bool(self.split), "split", "must not be empty")
        require(self.num_workers >= 0, "num_workers", "must be >= 0")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
