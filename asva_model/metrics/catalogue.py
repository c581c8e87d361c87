"""Every reported number, once: its name, which direction is better, its interval and spread keys, where it is
shown and its unit. What evaluation reports (:func:`reported_keys`), what a sweep may optimize and in which
direction (:func:`mode`), the order of the comparison page's and the per-class table's columns
(:func:`in_order`), and how a number is read with its interval (:func:`interval`) all come from here.

A metric's interval is reported as ``<name>_ci_low`` and ``<name>_ci_high`` (95 %), its spread over clips as
``<name>_std``. The training stage describes its own numbers (loss, throughput) with the same
:class:`Metric` type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from asva_model.metrics.picture import CHANNELS

CI_LOW, CI_HIGH, STD = "_ci_low", "_ci_high", "_std"


@dataclass(frozen=True)
class Metric:
    name: str
    """The key the number is reported under (``eval/<name>`` in MLflow)."""
    direction: Literal["higher", "lower", "reference"]
    """Which way is better; ``reference`` for a number that frames others (a control, the ground truth's
    level), never an objective."""
    family: str = ""
    """The entry of ``eval.metrics.metrics`` that computes it (``fid``, ``sync`` ...); empty for training's."""
    interval: bool = False
    """Reported with its 95 % interval, ``<name>_ci_low`` / ``<name>_ci_high``."""
    spread: bool = False
    """Reported with its std over clips, ``<name>_std``."""
    shown: bool = True
    """A column of the comparison page and the per-class table (a lag in seconds is not)."""
    unit: str = ""
    """``s`` for seconds, ``dB``, ``/255`` for colour steps; empty for scores (most are x 100, as the paper
    reports them)."""

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this metric is reported under."""
        return (
            self.name,
            *((self.name + CI_LOW, self.name + CI_HIGH) if self.interval else ()),
            *((self.name + STD,) if self.spread else ()),
        )


EVALUATION_METRICS: tuple[Metric, ...] = (
    Metric("FID", "lower", "fid"),
    Metric("FVD", "lower", "fvd"),
    Metric("IA", "higher", "ia", spread=True),
    Metric("IT", "higher", "it", spread=True),
    Metric("RelSync", "higher", "relsync", spread=True),
    Metric("AlignSync", "higher", "alignsync", spread=True),
    Metric("Sync", "higher", "sync", interval=True),
    Metric("Sync_shifted", "reference", "sync"),
    Metric("Sync_win_rate", "higher", "sync", interval=True),
    Metric("Sync_gt", "reference", "sync"),
    Metric("SyncLag_s", "lower", "sync", shown=False, unit="s"),
    # mean of (generated best lag - GT best lag): negative = the generated motion comes before the GT's
    Metric("SyncLead_s", "reference", "sync", shown=False, unit="s"),
    Metric("AVAlign", "higher", "avalign", interval=True),
    Metric("AVAlign_shifted", "reference", "avalign"),
    Metric("AVAlign_gt", "reference", "avalign"),
    Metric("Frame0_PSNR", "higher", "picture", interval=True, unit="dB"),
    Metric("Frame0_PSNR_min", "higher", "picture", unit="dB"),
    # signed colour differences in 1/255 steps: 0 is best, so no better direction
    *(
        Metric(f"{name}_{c}", "reference", "picture", interval=True, shown=shown, unit="/255")
        for name, shown in (("ColourDrift", True), ("ColourError", False))
        for c in CHANNELS
    ),
)
"""The evaluation's numbers, in the order they are shown (docs/metrics.md says what each one is)."""
NUM_CLIPS = "num_clips"
"""Reported beside them: how many clips the numbers are over."""


def reported_keys(
    families: Iterable[str], catalogue: Sequence[Metric] = EVALUATION_METRICS
) -> tuple[str, ...]:
    """Every key evaluation reports for these entries of ``eval.metrics.metrics`` (besides ``num_clips``)."""
    wanted = set(families)
    return tuple(key for m in catalogue if m.family in wanted for key in m.keys)


def find(key: str, catalogue: Sequence[Metric] = EVALUATION_METRICS) -> tuple[Metric, str] | None:
    """The metric a reported key belongs to and the key's suffix (``""``, ``_ci_low``, ``_ci_high``,
    ``_std``); None for a key no metric reports."""
    for m in catalogue:
        for key_of in m.keys:
            if key_of == key:
                return m, key[len(m.name) :]
    return None


def mode(key: str, catalogue: Sequence[Metric] = EVALUATION_METRICS) -> Literal["min", "max"] | None:
    """How a sweep optimizes ``key``: ``max`` or ``min``; None when it is no objective (a reference, a spread,
    the optimistic end of an interval). The conservative end of an interval is one: a scale whose *lower*
    bound of Sync is highest is the one surely good."""
    found = find(key, catalogue)
    if found is None or found[0].direction == "reference":
        return None
    metric, suffix = found
    goal = "max" if metric.direction == "higher" else "min"
    if suffix == "":
        return goal
    conservative = CI_LOW if goal == "max" else CI_HIGH
    return goal if suffix == conservative else None


def interval(metrics: Mapping[str, float | None], name: str) -> tuple[float, float] | None:
    """``(low, high)`` of ``name``'s 95 % interval in a reported dict, or None when it has none there."""
    low, high = metrics.get(name + CI_LOW), metrics.get(name + CI_HIGH)
    return None if low is None or high is None else (low, high)


def in_order(
    names: Iterable[str], shown_only: bool = True, catalogue: Sequence[Metric] = EVALUATION_METRICS
) -> list[str]:
    """Those of ``names`` that are metrics (not interval ends or spreads), in the catalogue's display order."""
    present = set(names)
    return [m.name for m in catalogue if m.name in present and (m.shown or not shown_only)]


def ranked(names: Iterable[str], catalogue: Sequence[Metric] = EVALUATION_METRICS) -> list[Metric]:
    """Those of ``names`` that have a better direction (no reference), in display order: what a comparison
    ranks runs by."""
    present = set(in_order(names, catalogue=catalogue))
    return [m for m in catalogue if m.name in present and m.direction != "reference"]


def table_columns(catalogue: Sequence[Metric] = EVALUATION_METRICS) -> tuple[str, ...]:
    """The per-class table's metric columns: every shown metric with its interval ends."""
    return tuple(key for m in catalogue if m.shown for key in m.keys if not key.endswith(STD))


def headline(
    metrics: Mapping[str, float], catalogue: Sequence[Metric] = EVALUATION_METRICS
) -> dict[str, float]:
    """The metrics of a reported dict without their interval ends, spreads and clip count, in display order."""
    return {name: metrics[name] for name in in_order(metrics, shown_only=False, catalogue=catalogue)}
