"""The experiment config tree: every job reads the sections it needs from one YAML file.

Each section is defined beside the code that owns it (``storage``, ``tracking``, ``cluster`` in their
modules, ``train``/``eval``/``preprocess`` in their stage packages, the model and data sections in
``asva_model``); this module only assembles them.

Search-space keys in sweep files are dotted paths into this tree (``model.audio_cond_drop_prob``,
``train.lr``, ``eval.audio_guidance_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asva_model.config import ModelConfig, VAEPretrainConfig
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_model.errors import require
from asva_platform import config as cfg
from asva_platform.cluster import ClusterConfig
from asva_platform.evaluation.config import EvalConfig
from asva_platform.preprocess.config import PreprocessConfig
from asva_platform.storage import StorageConfig
from asva_platform.tracking import TrackingConfig
from asva_platform.training.config import TrainConfig


@dataclass
class ExperimentConfig:
    name: str = "avsyncd"
    """Run name: checkpoints go to <storage.root>/runs/<name>; re-using a name resumes that run."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Object storage."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Ray cluster."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """AVSync15-layout dataset."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Clip sampling (frames, audio, mel)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """AVSyncD model."""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """Latent-cache preprocessing job."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training job."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Generation and evaluation."""
    vae_pretrain: VAEPretrainConfig = field(default_factory=VAEPretrainConfig)
    """`asva pretrain-vae`: training a small VAE for toy-scale runs (SD-1.5's VAE is used otherwise)."""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, "name", f"must be non-empty without '/', got {self.name!r}")
        # The audio encoder's patch grid is fixed by the mel it was trained on.
        enc = self.model.audio_encoder
        require(self.sampling.num_mel_bins == enc.num_mel_bins, "sampling.num_mel_bins",
                f"{self.sampling.num_mel_bins} != model.audio_encoder.num_mel_bins {enc.num_mel_bins}")
        require(self.sampling.mel_target_length == enc.target_length, "sampling.mel_target_length",
                f"{self.sampling.mel_target_length} != model.audio_encoder.target_length {enc.target_length}")


def load_experiment(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment YAML with dotted overrides; raises ConfigError (one line) on bad input."""
    return cfg.load(ExperimentConfig, path, overrides)
