"""Which windows an evaluation generates: the paper's protocol applied to a dataset split.

Every usable video of the split gives ``sampling.test_clips_per_video`` (3) evenly spaced 2 s windows,
``linspace(0, duration - 2, 3)`` over the video's span (``test_window_starts`` of the data layer; a
`clip`-type list entry restricts the span to its [start, end]). The conditions of a window are its first
ground-truth frame, its audio and its class prompt; the clip is named ``<class>/<stem>_clip-<k:02d>``.
Videos that cannot be decoded or are too short are reported as skipped, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asva_model.data.avsync15 import ClipEntry, SplitListing, read_split
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_model.data.sampling import entry_span, probe_entries, test_window_starts
from asva_model.metrics.protocol import EvalWindow
from asva_platform.datasets import dataset_access
from asva_platform.errors import UserError
from asva_platform.evaluation.config import EvalConfig
from asva_platform.storage import Storage


@dataclass(frozen=True)
class VideoTask:
    """One test video and its evaluation windows: the unit of work of an evaluation worker."""

    entry: ClipEntry
    """The list entry (path relative to the dataset root, class, prompt)."""
    windows: tuple[EvalWindow, ...]
    """Its windows in index order."""


@dataclass
class EvalPlan:
    tasks: list[VideoTask]
    """Videos to evaluate, in name order."""
    skipped: list[dict] = field(default_factory=list)
    """Every list entry or video left out: {path, reason, detail}."""

    @property
    def windows(self) -> list[EvalWindow]:
        return [w for t in self.tasks for w in t.windows]


def pick_round_robin(entries: list[ClipEntry], limit: int) -> list[ClipEntry]:
    """At most ``limit`` entries (0 = all), taken one per class in turn (classes and entries in name order),
    so a small evaluation still covers as many classes as it can."""
    ordered = sorted(entries, key=lambda e: e.name)
    if not limit or limit >= len(ordered):
        return ordered
    by_class: dict[str, list[ClipEntry]] = {}
    for e in ordered:
        by_class.setdefault(e.class_dir, []).append(e)
    picked: list[ClipEntry] = []
    while len(picked) < limit:
        for queue in by_class.values():
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return sorted(picked, key=lambda e: e.name)


def windows_of(
    entry: ClipEntry, duration: float, offset: float, sampling: SamplingConfig
) -> tuple[EvalWindow, ...]:
    """The evaluation windows of a video whose usable span starts at ``offset`` and lasts ``duration`` s."""
    starts = test_window_starts(duration, sampling)
    return tuple(
        EvalWindow(entry.name, entry.class_dir, k, float(offset + s), sampling.clip_duration)
        for k, s in enumerate(starts)
    )


def plan_evaluation(
    eval_cfg: EvalConfig, dataset: DatasetConfig, sampling: SamplingConfig, storage: Storage
) -> EvalPlan:
    """Read the split, pick ``eval.max_videos`` videos, probe them and lay out their windows."""
    root, fs = dataset_access(dataset, storage)
    try:
        listing = read_split(dataset, eval_cfg.split, fs, root=root)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UserError(f"dataset {dataset.root}: {str(err).splitlines()[0]}") from None
    chosen = SplitListing(
        listing.split, pick_round_robin(listing.entries, eval_cfg.max_videos), listing.skipped
    )
    good, infos = probe_entries(chosen, root, sampling, fs)
    tasks = []
    for entry in good.entries:
        offset, duration = entry_span(entry, infos[entry.name])
        tasks.append(VideoTask(entry, windows_of(entry, duration, offset, sampling)))
    skipped = [s.to_dict() for s in good.skipped]
    if not tasks:
        raise UserError(
            f"dataset {dataset.root}: no usable videos in split {eval_cfg.split!r} ({len(skipped)} skipped)"
        )
    return EvalPlan(tasks, skipped)
