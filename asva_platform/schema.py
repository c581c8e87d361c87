"""The experiment config: every job reads the sections it needs from one YAML file.

Search-space keys in sweep files are dotted paths into this tree (``model.audio_cond_drop_prob``,
``train.lr``, ``eval.audio_guidance_scale``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from asva_model.config import ModelConfig, VAEPretrainConfig
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_platform import config as cfg
from asva_platform.config import require
from asva_platform.evaluation.config import EvalConfig
from asva_platform.preprocess.config import PreprocessConfig
from asva_platform.training.config import TrainConfig

DEFAULT_S3_PORT = 9100
DEFAULT_MLFLOW_PORT = 5100
DEFAULT_BUCKET = "asva"


@dataclass
class StorageConfig:
    root: str = f"s3://{DEFAULT_BUCKET}"
    """Where caches, checkpoints and results live: `s3://bucket/prefix` or a local directory."""
    endpoint_url: str = ""
    """S3 endpoint (e.g. the local S3 server); empty = $AWS_ENDPOINT_URL, else AWS itself."""
    region: str = "us-east-1"
    """S3 region."""
    max_attempts: int = 8
    """Attempts per S3 request (boto3 and pyarrow, standard retry mode, exponential backoff). 8 rides out an
    S3 outage of about 50 s in pyarrow (checkpoints, cache reads) and 10 s in boto3; raise it for longer ones."""

    def validate(self) -> None:
        require(bool(self.root), "root", "must not be empty")
        if self.endpoint_url:
            require(self.endpoint_url.startswith(("http://", "https://")), "endpoint_url",
                    f"must start with http:// or https://, got {self.endpoint_url!r}")
        require(self.max_attempts >= 1, "max_attempts", "must be >= 1")

    def resolved_endpoint(self) -> str:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")

    @property
    def cache_root(self) -> str:
        return self.root.rstrip("/") + "/caches"

    @property
    def runs_root(self) -> str:
        return self.root.rstrip("/") + "/runs"


@dataclass
class TrackingConfig:
    uri: str = f"http://127.0.0.1:{DEFAULT_MLFLOW_PORT}"
    """MLflow tracking server URI (a server, not a file store, so every node reaches it); $MLFLOW_TRACKING_URI wins."""
    experiment: str = "avsyncd"
    """MLflow experiment for this job's runs."""
    required: bool = True
    """Fail before starting when the tracking server is unreachable (False: log to a local store instead)."""

    def resolved_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.uri


@dataclass
class ClusterConfig:
    address: str = ""
    """Ray cluster to join (`auto`, `ray://...`); empty = $RAY_ADDRESS, else start a local Ray."""
    num_cpus: int = 0
    """Logical CPUs for a local Ray (0 = Ray's default). Data->Train streaming needs >= 4 (see README)."""


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

    def validate(self) -> None:
        require(bool(self.name) and "/" not in self.name, "name", f"must be non-empty without '/', got {self.name!r}")
        # The audio encoder's patch grid is fixed by the mel it was trained on.
        enc = self.model.resolved().audio_encoder
        require(self.sampling.num_mel_bins == enc.num_mel_bins, "sampling.num_mel_bins",
                f"{self.sampling.num_mel_bins} != model.audio_encoder.num_mel_bins {enc.num_mel_bins}")
        require(self.sampling.mel_target_length == enc.target_length, "sampling.mel_target_length",
                f"{self.sampling.mel_target_length} != model.audio_encoder.target_length {enc.target_length}")


def load_experiment(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment YAML with dotted overrides; raises ConfigError (one line) on bad input."""
    return cfg.load(ExperimentConfig, path, overrides)
