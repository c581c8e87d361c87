"""A sweep's comparison on Sync: one row per setting (its seeds grouped), each against the baseline.

A setting's trials differ only in their generation seed (``seeds`` in the sweep file, see
:data:`sweeps.spec.SEED_KEY`). Their per-clip scores (each evaluation's ``scores.npz``, clips matched by
name) form a clips x seeds table; the row gives its mean, the t interval over its cells (with one seed: the
trial's own), and a two-way bootstrap 95 % interval that resamples clips and seeds
(:func:`asva_model.metrics.stats.bootstrap_mean_interval`): the uncertainty of "this setting's Sync" when
both the clips and the generation noise could have come out otherwise.

Those intervals include the clip-to-clip spread that every setting shares (some clips are easy to sync,
some hard), so they overlap even when one setting is better on nearly every clip. The gain pairs clips
instead: the per-clip difference ``sync(setting) - sync(baseline)``, each averaged over its seeds, its mean
and 95 % paired t interval. A gain interval above 0 means the setting syncs better than the baseline on
these clips.

Where the evaluations wrote clip classes, a per-class table gives each class's mean per setting and its
best and worst setting.

Made for guidance sweeps over one parameter (seeds aside) with listed values (grid or choice), and for train
sweeps that evaluate their trials (``evaluate: true``: each trial's setting is a row, the baseline the first
of ``points_to_evaluate``), whose trials report Sync; ``best`` is the value with the highest mean Sync.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from asva_model.metrics.compute import sync_summary
from asva_model.metrics.picture import CHANNELS
from asva_model.metrics.stats import bootstrap_mean_interval, paired_difference_interval
from asva_platform.artifacts.evaluation import CLASSES_ARRAY, CLIP_NAMES_ARRAY, RECORD_FILE, SCORES_FILE
from asva_platform.artifacts.provenance import METRIC_NETWORKS, incomparable
from asva_platform.storage import Storage, join
from sweeps.mlflow_sweep import setting_name, trial_index
from sweeps.report import TrialRow, finite, setting_interval
from sweeps.spec import SEED_KEY, swept_keys

METRIC = "Sync"
SCORE_ARRAY = "sync"
"""The per-clip array of METRIC in an evaluation's scores.npz."""
SHIFTED_ARRAY = "sync_shifted"
"""Its shifted-audio control."""
# Comparison row key -> the trial's reported metric (asva_model.metrics.compute.sync_summary).
ROW_METRICS = {
    "mean": "Sync",
    "ci_low": "Sync_ci_low",
    "ci_high": "Sync_ci_high",
    "shifted": "Sync_shifted",
    "win_rate": "Sync_win_rate",
    "win_rate_ci_low": "Sync_win_rate_ci_low",
    "win_rate_ci_high": "Sync_win_rate_ci_high",
    "gt": "Sync_gt",
}
PICTURE_ARRAYS = ("frame0_psnr", "colour_error", "colour_drift")
"""The ``picture`` metric's per-clip arrays a row pools over clips x seeds (absent: the row's keys are None)."""
PICTURE_KEYS = (
    "frame0_psnr",
    "frame0_psnr_min",
    *(f"colour_{kind}_{c}" for kind in ("drift", "error") for c in CHANNELS),
    "lead_s",
)
"""Row keys of the picture and timing: frame 0 vs the conditioning image in dB (mean, worst clip), colour
drift / error per channel in 1/255 (means), the mean lead of the generated best lag over the GT's (s)."""
LAG_ARRAYS = {"generated": "sync_lag_s", "gt": "sync_lag_gt_s"}
ROW_KEYS = (
    "value",
    "seeds",
    "num_clips",
    "mean",
    "boot_ci_low",
    "boot_ci_high",
    "ci_low",
    "ci_high",
    "shifted",
    "win_rate",
    "win_rate_ci_low",
    "win_rate_ci_high",
    "gt",
    "gain",
    "gain_ci_low",
    "gain_ci_high",
    *PICTURE_KEYS,
)
"""A comparison row's keys, in the order of the settings table."""
# Parent-run metric -> row key of the best value.
PARENT_METRICS = {
    "best_Sync_mean": "mean",
    "best_Sync_boot_ci_low": "boot_ci_low",
    "best_Sync_boot_ci_high": "boot_ci_high",
    "best_Sync_gain": "gain",
    "best_Sync_gain_ci_low": "gain_ci_low",
    "best_Sync_gain_ci_high": "gain_ci_high",
    "best_Sync_win_rate": "win_rate",
}


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
    """One per listed value with a trial that did not fail, in the listed order, keys :data:`ROW_KEYS`: the
    value, its seeds and clips, the mean with its bootstrap (clips x seeds) and t intervals, the shifted-audio
    control, the win rate over it (Wilson), the ground truth, the paired gain (None = unknown)."""
    per_class: list[dict[str, Any]] = field(default_factory=list)
    """One per class (where the evaluations wrote classes): class, clips, ``<metric>@<value>`` per value,
    best, worst (values)."""
    lags: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Per value (as a string): the best audio lag of each clip x seed, ``generated`` and ``gt``, as
    ``{lag in s: count}``: a model whose motion comes a frame early has its generated mass at -1/fps."""
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per trial (run name): what produced its numbers (the evaluation record's ``provenance``)."""
    incomparable: list[str] = field(default_factory=list)
    """Trials whose metric networks, scored videos or protocol differ from the baseline trial's: which
    metrics and why (:func:`asva_platform.artifacts.provenance.incomparable`)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def best_row(self) -> dict[str, Any]:
        return next(r for r in self.rows if r["value"] == self.best)

    def parent_metrics(self) -> dict[str, float]:
        """The best value's ``best_Sync_mean`` (+ bootstrap ``_boot_ci_low/high``), ``best_Sync_gain``
        (+ ``_ci_low``/``_ci_high``) and ``best_Sync_win_rate``, where known."""
        row = self.best_row()
        return {name: float(row[key]) for name, key in PARENT_METRICS.items() if finite(row[key])}

    def table(self) -> list[str]:
        """The comparison as console lines."""
        seeds = max(r["seeds"] for r in self.rows)
        over = f"clips x {seeds} seeds" if seeds > 1 else "clips"
        lines = [
            f"{self.metric} vs {self.param} (mean, bootstrap 95% CI over {over}; gain: per-clip difference "
            f"from {self.baseline}, paired on the same clips; * = best mean)",
            f"  {'value':10s} {self.metric + ' [95% CI]':24s} {'shifted':>8s}  {'win rate [95% CI]':20s} "
            f"{f'gain vs {self.baseline} [95% CI]':26s} clips x seeds",
        ]
        for r in self.rows:
            value = f"{r['value']}{' *' if r['value'] == self.best else ''}"
            low, high = setting_interval(r)
            lines.append(
                f"  {value:10s} {_with_interval(r['mean'], low, high, '.3f'):24s} "
                f"{_with_interval(r['shifted'], None, None, '.3f'):>8s}  "
                f"{_with_interval(r['win_rate'], r['win_rate_ci_low'], r['win_rate_ci_high'], '.2f'):20s} "
                f"{_with_interval(r['gain'], r['gain_ci_low'], r['gain_ci_high'], '+.3f'):26s} "
                f"{'-' if r['num_clips'] is None else r['num_clips']} x {r['seeds']}"
            )
        gt = [r["gt"] for r in self.rows if r["gt"] is not None]
        if gt:
            lines.append(
                f"  ground truth {self.metric} {np.mean(gt):.3f}; shifted: the same clips against their "
                "audio rolled by eval.metrics.sync_shift_s"
            )
        if self.per_class:
            lines.append(
                f"  per class, best / worst {self.param}: "
                + "; ".join(f"{c['class']} {c['best']} / {c['worst']}" for c in self.per_class)
            )
        lines += [f"  warning: {line}" for line in self.incomparable]
        return lines


def _with_interval(value: float | None, low: float | None, high: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}" + ("" if low is None or high is None else f" [{low:{fmt}}, {high:{fmt}}]")


def _plain(value: Any) -> float | None:
    return float(value) if finite(value) else None


SETTING = "setting"
"""The compared parameter of a train sweep that evaluates its trials: each trial's setting (its swept values,
named by :func:`sweeps.mlflow_sweep.setting_name`)."""


@dataclass
class Axis:
    """What a sweep's comparison runs along: the parameter, its values in the listed order (the baseline first)
    and the value of each trial."""

    param: str
    values: list[Any]
    value_of: Callable[[TrialRow], Any]


def comparison_axis(spec, rows: list[TrialRow]) -> Axis | None:
    """A guidance sweep over one grid/choice parameter (seeds aside): that parameter, the baseline its first
    value. A train sweep that evaluates its trials: the trials' settings, the baseline the first of
    ``points_to_evaluate`` (else the first trial). None for any other sweep."""
    keys = swept_keys(spec)
    if spec.kind == "guidance" and len(keys) == 1:
        kind, values = next(iter(spec.search_space[keys[0]].items()))
        if kind in ("grid", "choice"):
            return Axis(keys[0], list(values), lambda r: r.params.get(keys[0]))
        return None
    if spec.kind != "train" or not spec.evaluate:
        return None

    def value_of(row: TrialRow) -> str:
        return setting_name({k: row.params[k] for k in keys if k in row.params})

    values = list(dict.fromkeys(value_of(r) for r in sorted(rows, key=lambda r: trial_index(r.trial_id))))
    if spec.points_to_evaluate:
        first = setting_name({k: v for k, v in spec.points_to_evaluate[0].items() if k in keys})
        values = [first, *(v for v in values if v != first)]
    return Axis(SETTING, values, value_of)


@dataclass
class TrialScores:
    """One evaluation's per-clip scores, by clip name."""

    sync: dict[str, float]
    shifted: dict[str, float]
    classes: dict[str, str]
    """Clip -> class ({} for evaluations written before scores.npz kept classes)."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """The picture and lag arrays it holds (:data:`PICTURE_ARRAYS`, :data:`LAG_ARRAYS`), over its clips."""


def clip_scores(storage: Storage, eval_uri: str) -> TrialScores | None:
    """One evaluation's per-clip scores; None when it wrote none (or none is known)."""
    uri = join(eval_uri, SCORES_FILE) if eval_uri else ""
    if not uri or not storage.exists(uri):
        return None
    with np.load(io.BytesIO(storage.read_bytes(uri))) as data:
        names = data[CLIP_NAMES_ARRAY].tolist()
        by_name = {
            key: dict(zip(names, data[key].astype(float).tolist())) for key in (SCORE_ARRAY, SHIFTED_ARRAY)
        }
        classes = dict(zip(names, data[CLASSES_ARRAY].tolist())) if CLASSES_ARRAY in data else {}
        wanted = (*PICTURE_ARRAYS, *LAG_ARRAYS.values())
        arrays = {key: data[key].astype(float) for key in wanted if key in data}
    return TrialScores(by_name[SCORE_ARRAY], by_name[SHIFTED_ARRAY], classes, arrays)


@dataclass
class SettingScores:
    """A setting's seeds: clips x seeds tables over the clips every seed evaluated."""

    clips: list[str]
    sync: np.ndarray
    shifted: np.ndarray
    classes: dict[str, str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Picture and lag arrays pooled over every trial's clips (only those every trial holds)."""

    @classmethod
    def of(cls, trials: list[TrialScores | None]) -> SettingScores | None:
        if not trials or any(t is None for t in trials):
            return None
        clips = [c for c in trials[0].sync if all(c in t.sync for t in trials)]
        if not clips:
            return None
        table = lambda key: np.array([[getattr(t, key)[c] for t in trials] for c in clips])  # noqa: E731
        shared = set.intersection(*(set(t.arrays) for t in trials))
        pooled = {key: np.concatenate([t.arrays[key] for t in trials]) for key in sorted(shared)}
        return cls(clips, table("sync"), table("shifted"), trials[0].classes, pooled)

    def picture(self) -> dict[str, float | None]:
        """The row's :data:`PICTURE_KEYS` from the pooled arrays (None where the evaluations had none)."""
        a = self.arrays
        out: dict[str, float | None] = dict.fromkeys(PICTURE_KEYS)
        if "frame0_psnr" in a:
            out.update(
                frame0_psnr=float(a["frame0_psnr"].mean()), frame0_psnr_min=float(a["frame0_psnr"].min())
            )
        for kind in ("drift", "error"):
            if f"colour_{kind}" in a:
                means = a[f"colour_{kind}"].mean(axis=0)
                out.update({f"colour_{kind}_{c}": float(means[i]) for i, c in enumerate(CHANNELS)})
        if all(key in a for key in LAG_ARRAYS.values()):
            out["lead_s"] = float(np.mean(a[LAG_ARRAYS["generated"]] - a[LAG_ARRAYS["gt"]]))
        return out

    def lag_counts(self) -> dict[str, dict[str, int]]:
        """``{side: {lag in s: clips x seeds}}`` for the sides whose lags the evaluations kept."""
        out = {}
        for side, key in LAG_ARRAYS.items():
            if key in self.arrays:
                lags, counts = np.unique(np.round(self.arrays[key], 3), return_counts=True)
                out[side] = {f"{lag:g}": int(n) for lag, n in zip(lags, counts)}
        return out

    def per_clip(self) -> dict[str, float]:
        """Each clip's sync averaged over the seeds."""
        return dict(zip(self.clips, self.sync.mean(axis=1).tolist()))


def paired_gain(trial: dict[str, float] | None, baseline: dict[str, float] | None) -> dict[str, float | None]:
    """Mean per-clip gain of ``trial`` over ``baseline`` on their shared clips, with its 95 % interval."""
    shared = [name for name in (baseline or {}) if name in (trial or {})]
    if not shared:
        return {"gain": None, "gain_ci_low": None, "gain_ci_high": None}
    gain = paired_difference_interval([trial[n] for n in shared], [baseline[n] for n in shared])
    return {"gain": gain.estimate, "gain_ci_low": gain.low, "gain_ci_high": gain.high}


def setting_row(value: Any, trials: list[TrialRow], scores: SettingScores | None) -> dict[str, Any]:
    """The row of one setting: from its clips x seeds scores, else (no scores) from what its trials reported."""
    row: dict[str, Any] = {"value": value, "seeds": len(trials)}
    if scores is not None:
        reported = sync_summary(scores.sync.reshape(-1), scores.shifted.reshape(-1))
        boot = bootstrap_mean_interval(scores.sync)
        row.update({key: _plain(reported.get(name)) for key, name in ROW_METRICS.items()})
        row.update(boot_ci_low=_plain(boot.low), boot_ci_high=_plain(boot.high), num_clips=len(scores.clips))
        row.update(scores.picture())
    else:  # one trial: its reported values stand; several: the mean of theirs, intervals unknown
        own = (
            trials[0].metrics
            if len(trials) == 1
            else {
                name: float(np.mean([t.metrics[name] for t in trials]))
                for name in ("Sync", "Sync_shifted", "Sync_win_rate")
                if all(finite(t.metrics.get(name)) for t in trials)
            }
        )
        row.update({key: _plain(own.get(name)) for key, name in ROW_METRICS.items()})
        clips = trials[0].metrics.get("num_clips")
        row.update(boot_ci_low=None, boot_ci_high=None, num_clips=int(clips) if finite(clips) else None)
        row.update(dict.fromkeys(PICTURE_KEYS))
    gts = [float(t.metrics["Sync_gt"]) for t in trials if finite(t.metrics.get("Sync_gt"))]
    row["gt"] = float(np.mean(gts)) if gts else None  # the same ground-truth clips in every trial
    return row


def per_class_table(values: list[Any], scores: dict[Any, SettingScores | None]) -> list[dict[str, Any]]:
    """Each class's mean per setting (over its clips x seeds) and its best and worst setting; [] without classes."""
    known = {v: s for v, s in scores.items() if s is not None and s.classes}
    if len(known) < 2:
        return []
    classes = sorted({s.classes.get(c, "") for s in known.values() for c in s.clips} - {""})
    out = []
    for name in classes:
        means = {}
        for value in values:
            s = known.get(value)
            rows = [i for i, c in enumerate(s.clips) if s.classes.get(c) == name] if s is not None else []
            if rows:
                means[value] = float(s.sync[rows].mean())
        if not means:
            continue
        clips = max(sum(s.classes.get(c) == name for c in s.clips) for s in known.values())
        out.append(
            {
                "class": name,
                "clips": clips,
                **{f"{METRIC}@{v}": means.get(v) for v in values},
                "best": max(means, key=means.get),
                "worst": min(means, key=means.get),
            }
        )
    return out


def compare_trials(rows: list[TrialRow], spec, storage: Storage) -> SweepComparison | None:
    """The comparison of a sweep's settings on Sync (see the module doc); None where it does not apply."""
    axis = comparison_axis(spec, rows)
    if axis is None:
        return None
    param, values = axis.param, axis.values
    done = [
        r
        for r in rows
        if r.status != "failed" and axis.value_of(r) in values and finite(r.metrics.get(METRIC))
    ]
    if not done:
        return None
    done.sort(
        key=lambda r: (values.index(axis.value_of(r)), r.params.get(SEED_KEY, 0), trial_index(r.trial_id))
    )
    listed = [v for v in values if any(axis.value_of(r) == v for r in done)]
    groups = {v: [r for r in done if axis.value_of(r) == v] for v in listed}
    scores = {
        v: SettingScores.of([clip_scores(storage, r.eval_uri) for r in trials])
        for v, trials in groups.items()
    }
    base = scores.get(values[0])
    base_clips = base.per_clip() if base is not None else None
    out = []
    for value, trials in groups.items():
        row = setting_row(value, trials, scores[value])
        own = scores[value].per_clip() if scores[value] is not None else None
        row.update({k: _plain(v) for k, v in paired_gain(own, base_clips).items()})
        out.append({k: row[k] for k in ROW_KEYS})
    best = max(out, key=lambda row: row["mean"])["value"]
    lags = {str(v): s.lag_counts() for v, s in scores.items() if s is not None and s.lag_counts()}
    provenance = {r.run_name: trial_provenance(storage, r.eval_uri) for r in done}
    return SweepComparison(
        param,
        METRIC,
        values[0],
        best,
        out,
        per_class_table(listed, scores),
        lags,
        provenance,
        provenance_warnings(done, provenance),
    )


def trial_provenance(storage: Storage, eval_uri: str) -> dict[str, str]:
    """A trial evaluation's provenance ({} where its record is missing or older than provenance)."""
    if not eval_uri or not storage.exists(join(eval_uri, RECORD_FILE)):
        return {}
    return dict(storage.read_json(join(eval_uri, RECORD_FILE)).get("provenance") or {})


def provenance_warnings(done: list[TrialRow], provenance: dict[str, dict[str, str]]) -> list[str]:
    """Each trial whose metrics cannot be set beside the first trial's, with the reason."""
    base = provenance.get(done[0].run_name, {})
    families = list(METRIC_NETWORKS)
    return [
        f"{r.run_name} vs {done[0].run_name}: {line}"
        for r in done[1:]
        for line in incomparable(base, provenance.get(r.run_name, {}), families)
    ]
