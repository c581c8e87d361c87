"""The experiment config tree: every job reads the sections it needs from one YAML file.

Each section is defined beside the code that owns it (``storage``, ``tracking``, ``cluster`` in their
modules, ``train``/``eval``/``preprocess`` in their stage packages, the model and data sections in
``asva_model``); this module only assembles them.

Search-space keys in sweep files are dotted paths into this tree (``model.audio_cond_drop_prob``,
``train.lr``, ``generate.audio_guidance_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from asva_model.config import ModelConfig, VAEPretrainConfig
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_model.errors import require
from asva_platform import config as cfg
from asva_platform.cluster import ClusterConfig
from asva_platform.evaluation.config import EvalConfig
from asva_platform.inference.config import GenerateConfig
from asva_platform.preprocess.config import PreprocessConfig
from asva_platform.storage import StorageConfig
from asva_platform.tracking import TrackingConfig
from asva_platform.training.config import TrainConfig

SEED_KEY = "generate.seed"
"""The generation seed's key path: a repeat of a setting, not a setting (a sweep groups trials that differ only
in it; the comparison page puts them side by side)."""
PROTOCOLS: dict[str, dict[str, str]] = {
    "authors": {
        "sampling.frame_picking": "authors",
        "sampling.audio_window": "authors",
        "sampling.audio_channels": "authors",
        "sampling.colour_conversion": "authors",
        "sampling.resampler": "sinc",
        "model.audio_encoder.drop_path_layout": "authors",
        "generate.sampler": "authors",
        "generate.audio_encoder_source": "imagebind",
        "eval.metrics.fid_batchnorm": "authors",
    },
    "exact": {
        "sampling.frame_picking": "exact",
        "sampling.audio_window": "exact",
        "sampling.audio_channels": "mean",
        "sampling.colour_conversion": "accurate",
        "sampling.resampler": "soxr",
        "model.audio_encoder.drop_path_layout": "per_sample",
        "generate.sampler": "standard",
        "generate.audio_encoder_source": "checkpoint",
        "eval.metrics.fid_batchnorm": "eval",
    },
}
"""The `protocol` switch: every place our pipeline can follow the authors' code where it differs from the
clean choice (docs/metrics.md, "Reproducing the paper", measures each). `authors` reproduces the paper's
numbers; `exact` is the clean behaviour and the default of each field."""


def protocol_of(values: dict[str, Any]) -> str:
    """`authors` or `exact` when the flattened config ``values`` follow one protocol on every quirk, else
    `mixed`."""
    for name, table in PROTOCOLS.items():
        if all(values.get(key) == value for key, value in table.items()):
            return name
    return "mixed"


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
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    """How clips are generated (guidance, steps, sampler, seed): validation samples, generation, evaluation."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """What an evaluation generates and scores, and how it runs."""
    vae_pretrain: VAEPretrainConfig = field(default_factory=VAEPretrainConfig)
    """`asva pretrain-vae`: training a small VAE for toy-scale runs (SD-1.5's VAE is used otherwise)."""

    SWITCHES: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {"protocol": PROTOCOLS}
    """`protocol: authors | exact` in a file or the override `protocol=...` sets every field of PROTOCOLS the config
    does not set itself."""
    MOVED: ClassVar[dict[str, str]] = {
        f"eval.{k}": f"generate.{k}"
        for k in (
            "audio_guidance_scale",
            "text_guidance_scale",
            "num_inference_steps",
            "sampler",
            "audio_encoder_source",
            "seed",
        )
    }
    """Keys that moved: a file, override or search space that names the old key gets one line naming the new."""

    @property
    def protocol(self) -> str:
        """Which protocol this config follows on every quirk: `authors`, `exact` or `mixed`."""
        return protocol_of(cfg.flatten(self))

    def protocol_quirks(self) -> dict[str, Any]:
        """Each quirk's dotted key and value (what an evaluation record keeps beside its numbers)."""
        values = cfg.flatten(self)
        return {key: values[key] for key in PROTOCOLS["exact"]}

    def __post_init__(self) -> None:
        require(
            bool(self.name) and "/" not in self.name,
            "name",
            f"must be non-empty without '/', got {self.name!r}",
        )
        # The audio encoder's patch grid is fixed by the mel it was trained on.
        enc = self.model.audio_encoder
        require(
            self.sampling.num_mel_bins == enc.num_mel_bins,
            "sampling.num_mel_bins",
            f"{self.sampling.num_mel_bins} != model.audio_encoder.num_mel_bins {enc.num_mel_bins}",
        )
        require(
            self.sampling.mel_target_length == enc.target_length,
            "sampling.mel_target_length",
            f"{self.sampling.mel_target_length} != model.audio_encoder.target_length {enc.target_length}",
        )


def load_experiment(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment YAML with dotted overrides; raises ConfigError (one line) on bad input."""
    return cfg.load(ExperimentConfig, path, overrides)
