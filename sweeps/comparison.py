"""A guidance sweep's paired comparison on Sync: every trial against the baseline (the first listed value).

Each trial's mean Sync already carries a 95 % interval, but those intervals include the clip-to-clip
spread that every trial shares (some clips are easy to sync, some hard), so they overlap even when one
setting is better on nearly every clip. The comparison pairs clips instead: for each trial, the per-clip
difference ``sync(trial) - sync(baseline)`` over the clips both evaluated (matched by name, read from each
evaluation's ``scores.npz``), its mean (the gain) and 95 % paired t interval. A gain interval above 0
means the setting syncs better than the baseline on these clips.

Made only for guidance sweeps over one parameter with listed values (grid or choice) whose trials report
Sync; ``best`` is the value with the highest mean Sync.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from asva_model.metrics.stats import paired_difference_interval
from asva_platform.artifacts.evaluation import SCORES_FILE
from asva_platform.storage import Storage, join
from sweeps.mlflow_sweep import trial_index
from sweeps.report import TrialRow, finite

METRIC = "Sync"
SCORE_ARRAY = "sync"
"""The per-clip array of METRIC in an evaluation's scores.npz."""
# Comparison row key -> the trial's reported metric (asva_model.metrics.compute.sync_summary).
ROW_METRICS = {"mean": "Sync", "ci_low": "Sync_ci_low", "ci_high": "Sync_ci_high", "shifted": "Sync_shifted",
               "win_rate": "Sync_win_rate", "win_rate_ci_low": "Sync_win_rate_ci_low",
               "win_rate_ci_high": "Sync_win_rate_ci_high", "gt": "Sync_gt"}
# Parent-run metric -> row key of the best value.
PARENT_METRICS = {"best_Sync_gain": "gain", "best_Sync_gain_ci_low": "gain_ci_low",
                  "best_Sync_gain_ci_high": "gain_ci_high", "best_Sync_win_rate": "win_rate"}


@dataclass
class SweepComparison:
    param: str
    """The swept config key."""
    metric: str
    """What is compared (Sync)."""
    baseline: Any
    """The first listed value of ``param``; gains are against its trial."""
    best: Any
    """The value with the highest mean ``metric``."""
    rows: list[dict[str, Any]]
    """One per trial that did not fail, in the listed order: value, mean, ci_low, ci_high, shifted, win_rate,
    win_rate_ci_low, win_rate_ci_high, gt, gain, gain_ci_low, gain_ci_high, num_clips (None = unknown)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def best_row(self) -> dict[str, Any]:
        return next(r for r in self.rows if r["value"] == self.best)

    def parent_metrics(self) -> dict[str, float]:
        """``best_Sync_gain`` (+ ``_ci_low``/``_ci_high``) and ``best_Sync_win_rate``, where known."""
        row = self.best_row()
        return {name: float(row[key]) for name, key in PARENT_METRICS.items() if finite(row[key])}

    def table(self) -> list[str]:
        """The comparison as console lines."""
        lines = [f"{self.metric} vs {self.param} (gain: per-clip difference from {self.baseline}, paired on the "
                 "same clips; * = best mean)",
                 f"  {'value':10s} {self.metric + ' [95% CI]':24s} {'shifted':>8s}  {'win rate [95% CI]':20s} "
                 f"{f'gain vs {self.baseline} [95% CI]':26s} clips"]
        for r in self.rows:
            value = f"{r['value']}{' *' if r['value'] == self.best else ''}"
            lines.append(f"  {value:10s} {_with_interval(r['mean'], r['ci_low'], r['ci_high'], '.3f'):24s} "
                         f"{_with_interval(r['shifted'], None, None, '.3f'):>8s}  "
                         f"{_with_interval(r['win_rate'], r['win_rate_ci_low'], r['win_rate_ci_high'], '.2f'):20s} "
                         f"{_with_interval(r['gain'], r['gain_ci_low'], r['gain_ci_high'], '+.3f'):26s} "
                         f"{'-' if r['num_clips'] is None else r['num_clips']}")
        gt = [r["gt"] for r in self.rows if r["gt"] is not None]
        if gt:
            lines.append(f"  ground truth {self.metric} {np.mean(gt):.3f}; shifted: the same clips against their "
                         "audio rolled by eval.metrics.sync_shift_s")
        return lines


def _with_interval(value: float | None, low: float | None, high: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}" + ("" if low is None or high is None else f" [{low:{fmt}}, {high:{fmt}}]")


def _plain(value: Any) -> float | None:
    return float(value) if finite(value) else None


def baseline_of(spec) -> tuple[str, list[Any]] | None:
    """``(param, listed values)`` when ``spec`` is a guidance sweep over one grid/choice parameter."""
    if spec.kind != "guidance" or len(spec.search_space) != 1:
        return None
    ((param, dist),) = spec.search_space.items()
    kind, values = next(iter(dist.items()))
    return (param, list(values)) if kind in ("grid", "choice") else None


def clip_scores(storage: Storage, eval_uri: str) -> dict[str, float] | None:
    """``{clip name: per-clip sync}`` of one evaluation; None when it wrote no scores (or none is known)."""

    uri = join(eval_uri, SCORES_FILE) if eval_uri else ""
    if not uri or not storage.exists(uri):
        return None
    with np.load(io.BytesIO(storage.read_bytes(uri))) as data:
        return dict(zip(data["clip_names"].tolist(), data[SCORE_ARRAY].astype(float).tolist()))


def paired_gain(trial: dict[str, float] | None, baseline: dict[str, float] | None) -> dict[str, float | None]:
    """Mean per-clip gain of ``trial`` over ``baseline`` on their shared clips, with its 95 % interval."""
    shared = [name for name in (baseline or {}) if name in (trial or {})]
    if not shared:
        return {"gain": None, "gain_ci_low": None, "gain_ci_high": None}
    gain = paired_difference_interval([trial[n] for n in shared], [baseline[n] for n in shared])
    return {"gain": gain.estimate, "gain_ci_low": gain.low, "gain_ci_high": gain.high}


def compare_trials(rows: list[TrialRow], spec, storage: Storage) -> SweepComparison | None:
    """The paired comparison of a guidance sweep's trials (see the module doc); None where it does not apply."""
    found = baseline_of(spec)
    if found is None:
        return None
    param, values = found
    done = [r for r in rows if r.status != "failed" and param in r.params and r.params[param] in values
            and finite(r.metrics.get(METRIC))]
    if not done:
        return None
    done.sort(key=lambda r: (values.index(r.params[param]), trial_index(r.trial_id)))
    base = next((r for r in done if r.params[param] == values[0]), None)
    base_scores = clip_scores(storage, base.eval_uri) if base is not None else None
    out = []
    for r in done:
        row: dict[str, Any] = {"value": r.params[param],
                               **{key: _plain(r.metrics.get(name)) for key, name in ROW_METRICS.items()}}
        trial_scores = base_scores if r is base else clip_scores(storage, r.eval_uri)
        row.update({k: _plain(v) for k, v in paired_gain(trial_scores, base_scores).items()})
        clips = r.metrics.get("num_clips")
        row["num_clips"] = int(clips) if finite(clips) else None
        out.append(row)
    best = max(out, key=lambda row: row["mean"])["value"]
    return SweepComparison(param, METRIC, values[0], best, out)
