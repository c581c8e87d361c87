"""The training-checkpoint contract: its layout, its folder names and the trainer state record.

Layout of one checkpoint (Ray Train merges every rank's files into ``<run>/step_XXXXXXXX/``)::

    ds/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   per rank (optimizer + fp32 master partition)
    ds/zero_pp_rank_<r>_mp_rank_00_model_states.pt   per rank under ZeRO-3 (mp_rank_00_model_states.pt below)
    latest, zero_to_fp32.py                          DeepSpeed's tag pointer and consolidation script
    trainer_state.json                               :class:`TrainerState`
    ema.pt                                           EMA of the trainable weights (when enabled)

The training stage writes it (:mod:`asva_platform.training.checkpoint`); anyone may read it
(:mod:`asva_platform.inference.checkpoints` consolidates and exports one). :class:`ResolvedCheckpoint` is the
record of which checkpoint a reference named: what an evaluation keeps beside its numbers.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from asva_platform.artifacts.records import check_version
from asva_platform.storage import parse_uri

DS_TAG = "ds"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.pt"
_STEP_IN_NAME = re.compile(r"(?:global_step|step)[_-]?(\d+)")


def checkpoint_dir_name(step: int) -> str:
    """The folder a checkpoint of ``step`` is saved in, under its run: ``step_00000800``."""
    return f"step_{step:08d}"


def checkpoint_step(name: str) -> int | None:
    """The training step a checkpoint's folder name (``step_00000800``; DeepSpeed's ``global_step800``; a label
    ``step-800``) or a path ending in one says; None when it says none (the last one in a path wins)."""
    hits = _STEP_IN_NAME.findall(name)
    return int(hits[-1]) if hits else None


@dataclass
class Resume:
    """One restart of a run from its checkpoint."""

    step: int
    """The step it resumed at."""
    checksum: str
    """sha256 of the trainable weights after loading (rank 0's; '' on other ranks)."""
    source: str
    """The checkpoint it resumed from (storage path)."""
    mlflow_run_id: str
    """The MLflow run id the checkpoint named (the driver found the run by its tag)."""
    world_size: tuple[int, int]
    """(ranks that wrote the checkpoint, ranks that loaded it): another count resharded it."""


@dataclass
class RankPlacement:
    """Where one rank ran."""

    rank: int
    node_id: str
    node_ip: str
    host: str


@dataclass
class TrainerState:
    """``trainer_state.json``: where a run stands, written by rank 0 with every checkpoint."""

    SCHEMA_VERSION = 2
    """1: before the typed fields (cache id, data mode, resumes, ranks, last metrics in an ``extra`` dict)."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (0-based)."""
    batches_in_epoch: int = 0
    """Micro-batches each rank consumed in ``epoch`` (resume skips them: the data position)."""
    samples_seen: int = 0
    """Clips trained on, all ranks."""
    mlflow_run_id: str = ""
    """The MLflow run this training logs to."""
    param_checksum: str = ""
    """sha256 of the trainable weights at save time."""
    world_size: int = 0
    """Ranks that wrote the DeepSpeed shards (another worker count resumes through a universal checkpoint)."""
    zero_stage: int = 0
    """ZeRO stage of the shards."""
    global_batch_size: int = 0
    """Clips per optimizer step when saved (0 in checkpoints older than this field: samples_seen / step)."""
    cache_id: str = ""
    """The latent cache it trained on ('' when training online from raw clips)."""
    data_mode: Literal["cached", "online"] = "cached"
    """Where its batches came from (``train.data_mode``)."""
    resumes: list[Resume] = field(default_factory=list)
    """Every restart from a checkpoint, in order."""
    ranks: list[RankPlacement] = field(default_factory=list)
    """Where the ranks of the latest worker group run, in rank order."""
    last_metrics: dict[str, float] = field(default_factory=dict)
    """The metrics of the report that saved this checkpoint (a re-run of a finished run reports them)."""

    @property
    def saved_global_batch(self) -> int:
        """The global batch the checkpoint was trained with (0 when not known: no step yet)."""
        return self.global_batch_size or (self.samples_seen // self.step if self.step else 0)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = STATE_FILE) -> TrainerState:
        data = dict(data)
        version = check_version(data.pop("schema_version", 1), cls.SCHEMA_VERSION, where)
        if version == 1:  # the open `extra` dict, before the typed fields
            extra = data.pop("extra", {}) or {}
            data.update(
                cache_id=extra.get("cache_id", ""),
                data_mode=extra.get("data_mode", "cached"),
                last_metrics=extra.get("last_metrics", {}),
                ranks=extra.get("ranks", []),
                resumes=[
                    {"source": r.get("from", ""), **{k: v for k, v in r.items() if k != "from"}}
                    for r in extra.get("resumes", [])
                ],
            )
        data["resumes"] = [
            Resume(**{**r, "world_size": tuple(r["world_size"])}) for r in data.get("resumes", [])
        ]
        data["ranks"] = [RankPlacement(**r) for r in data.get("ranks", [])]
        return cls(**data)

    def save(self, directory: str | Path) -> None:
        Path(directory, STATE_FILE).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> TrainerState:
        path = Path(directory, STATE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_FILE})")
        return cls.from_json(json.loads(path.read_text()), str(path))


INIT_REF = "init"
Kind = Literal["init", "export", "training"]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a checkpoint reference points, decided without loading weights
    (:func:`asva_platform.inference.checkpoints.resolve_checkpoint`)."""

    ref: str
    """The reference as given."""
    kind: Kind
    """`init`, `export` (save_pretrained UNet folder) or `training` (Ray Train/DeepSpeed checkpoint)."""
    uri: str = ""
    """The folder's storage URI or absolute local path ('' for init)."""
    run_id: str = ""
    """The MLflow training run the reference came from ('' when given as a URI)."""
    step: int | None = None
    """Training step of the weights when known (trainer_state.json, or a step number in the path)."""

    @property
    def label(self) -> str:
        """A short name for outputs: ``init``, ``step-37000`` or the folder name."""
        if self.kind == "init":
            return INIT_REF
        if self.step is not None:
            return f"step-{self.step}"
        return PurePosixPath(str(parse_uri(self.uri))).name or "checkpoint"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "label": self.label}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedCheckpoint:
        return cls(**{k: v for k, v in data.items() if k != "label"})
