"""Evaluation records for the tests that read them (the comparison page, the protocol switch): built through
the record's own types, so a field the record gains or loses breaks here, once."""

from __future__ import annotations

from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.artifacts.evaluation import ClipRecord, EvaluationRecord
from asva_platform.experiment import PROTOCOLS
from asva_platform.inference.config import GenerateConfig


def clip(name: str = "dog/v0_clip-00") -> ClipRecord:
    return ClipRecord(
        name=name,
        video=f"{name.split('_clip-')[0]}.mp4",
        class_dir=name.split("/")[0],
        prompt=name.split("/")[0],
        index=0,
        start=0.0,
        video_uri="",
    )


def evaluation_record(
    metrics: dict | None = None, clips: list[ClipRecord] | None = None, protocol: str = "exact"
) -> EvaluationRecord:
    return EvaluationRecord(
        name="eval",
        eval_id="e0",
        eval_uri="",
        checkpoint=ResolvedCheckpoint("init", "init"),
        generate=GenerateConfig(),
        protocol=protocol,
        quirks=dict(PROTOCOLS[protocol]),
        split="test",
        max_videos=0,
        metric_families=[],
        sampling={},
        metrics=dict(metrics or {}),
        clips=[clip()] if clips is None else clips,
    )


def version_1_record(settings: dict | None = None) -> EvaluationRecord:
    """A record as written before the schema had a version (its settings in one dict)."""
    return EvaluationRecord.from_json(
        {
            "name": "old",
            "eval_id": "e1",
            "eval_uri": "",
            "checkpoint": {"ref": "init", "kind": "init"},
            "settings": settings or {},
            "metrics": {},
            "clips": [],
        }
    )
