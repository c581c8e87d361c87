"""What a training worker reads: the experiment's sections it uses and the run it belongs to. The job
(:mod:`asva_platform.training.job`) assembles it; Ray Train hands it to every worker as plain data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from asva_model.config import ModelConfig
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_platform.inference.config import GenerateConfig
from asva_platform.storage import StorageConfig
from asva_platform.training.config import TrainConfig


@dataclass
class RunSpec:
    """The run a worker trains in, decided by the driver."""

    tracking_uri: str
    """MLflow server (rank 0 logs there)."""
    mlflow_run_id: str
    """The run to log into (found by the driver; the same run on every resume)."""
    run_uri: str
    """``<storage>/<name>``: milestone checkpoints go under ``<run_uri>/milestones``."""
    cache_uri: str = ""
    """Cached mode: the latent cache's URI."""
    cache_id: str = ""
    """Cached mode: its id (recorded in checkpoints)."""


@dataclass
class TrainerSpec:
    """The sections a training worker uses, and its run."""

    train: TrainConfig
    model: ModelConfig
    sampling: SamplingConfig
    dataset: DatasetConfig
    """Online mode and validation's held-out clips read raw clips from it."""
    storage: StorageConfig
    generate: GenerateConfig
    """How validation's sample videos are generated."""
    run: RunSpec

    def on_world(self, world: int) -> TrainerSpec:
        """This spec for a worker group of ``world`` workers: an elastic run that Ray Train started on fewer than
        ``train.num_workers`` accumulates more micro-batches per step, so the global batch stays the same."""
        t = self.train
        if world == t.num_workers:
            return self
        accumulation = t.accumulation_for(world)
        if accumulation is None:  # the config check rules this out for every count an elastic run may get
            raise ValueError(f"{world} workers cannot keep the global batch of {t.global_batch_size} clips")
        train = dataclasses.replace(
            t,
            num_workers=world,
            min_workers=min(t.min_workers, world),
            gradient_accumulation_steps=accumulation,
        )
        return dataclasses.replace(self, train=train)
