"""The sweep's summary on its parent run: a table of trials, the best trial, and plots.

* ``summary/trials.csv`` and ``summary/trials.json`` (an MLflow table, rendered in the UI): one row per
  trial with its run, status (finished / stopped_early / failed), swept values and final metrics (each
  followed by the keys that qualify it, e.g. ``Sync_ci_low``, ``Sync_win_rate``);
* ``plots/<metric>_vs_<param>.png``: each plotted metric (the sweep's ``metric`` and ``plot_metrics``)
  against each swept parameter (seeds aside), trials ASHA stopped drawn hollow; 95 % error bars, the ground
  truth's level and the shifted-audio control where the trials report them (Sync);
* ``plots/<metric>_curves.png`` (train sweeps): the metric's history of every trial against ``step``;
* guidance sweeps on Sync (:mod:`sweeps.comparison`): the Sync plot shows each setting's mean over clips x
  seeds with its bootstrap 95 % interval, every seed's trial as a dot, and dashed reference lines for the
  ground truth and the shifted-audio control; ``summary/comparison.json``; ``summary/settings.csv|json``
  (one row per setting); ``summary/per_class.csv|json`` (each class's best and worst setting); the
  trials table gains its setting's ``Sync_boot_ci_low/high``; metrics ``best_Sync_mean`` (+ bootstrap
  interval), ``best_Sync_gain`` (+ ``_ci_low``/``_ci_high``), ``best_Sync_win_rate``;
* metrics ``best_<metric>``, ``trials``, ``trials_stopped_early``, ``trials_failed`` and tags naming the
  best trial's run. Re-logging an unchanged summary (a re-run of a finished sweep) adds no history.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asva_model.metrics import catalogue
from asva_platform.tracking import TAG_BEST_RUN, TAG_BEST_TRIAL, TAG_NOTE, ui_url
from sweeps.spec import SEED_KEY, swept_keys

if TYPE_CHECKING:
    from sweeps.comparison import SweepComparison


COMPARISON_ARTIFACT = "summary/comparison.json"
SETTINGS_TABLE = "summary/settings"
PER_CLASS_TABLE = "summary/per_class"
BOOT_COLUMNS = ("boot_ci_low", "boot_ci_high")
"""Comparison row keys the trials table repeats per trial (as ``<metric>_boot_ci_low`` ...): its setting's interval."""


@dataclass
class TrialRow:
    trial_id: str
    run_name: str
    params: dict[str, Any]
    status: str
    """`finished`, `stopped_early` or `failed`."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The trial's last reported numeric metrics."""
    run_id: str = ""
    """Its child run in MLflow ('' if it never opened one)."""
    history: list[tuple[float, float]] = field(default_factory=list)
    """(time_attr, metric) of every report (train trials)."""
    error: str = ""
    checkpoint: str = ""
    """Train trials: the last checkpoint the trial reported (storage URI)."""
    eval_uri: str = ""
    """Guidance trials and evaluated train trials: where their evaluation wrote clips and per-clip scores
    (storage URI)."""


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def best_row(rows: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    """The trial with the best final ``metric`` among those that did not fail."""
    scored = [r for r in rows if r.status != "failed" and finite(r.metrics.get(metric))]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda r: float(r.metrics[metric]))


def with_companions(rows: list[TrialRow], metrics: list[str]) -> list[str]:
    """``metrics`` each followed by the reported keys of its metric family that the trials reported (``Sync`` ->
    ``Sync_ci_low``, ``Sync_shifted``, ``Sync_win_rate`` ...; ``IA`` -> ``IA_std``), in catalogue order."""
    reported = {k for r in rows for k in r.metrics}
    out = []
    for name in metrics:
        found = catalogue.find(name)
        family = catalogue.reported_keys([found[0].family]) if found and found[0].family else ()
        out += [name, *(k for k in family if k in reported)]
    return list(dict.fromkeys(out))


def table_columns(rows: list[TrialRow], metrics: list[str]) -> list[str]:
    keys = sorted({k for r in rows for k in r.params})
    return ["run_name", "status", *keys, *metrics, "trial_id", "run_id"]


def table_rows(rows: list[TrialRow], metrics: list[str]) -> list[dict[str, Any]]:
    out = []
    for r in sorted(rows, key=lambda r: r.run_name):
        row: dict[str, Any] = {"run_name": r.run_name, "status": r.status, **r.params}
        row.update({m: r.metrics.get(m) for m in metrics})
        row.update({"trial_id": r.trial_id, "run_id": r.run_id})
        out.append(row)
    return out


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return buf.getvalue()


def setting_interval(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """A comparison row's 95 % interval: the bootstrap over clips x seeds, else (no per-clip scores) the t
    interval."""
    if row.get("boot_ci_low") is not None:
        return row["boot_ci_low"], row["boot_ci_high"]
    return row.get("ci_low"), row.get("ci_high")


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _interval(row: TrialRow, metric: str) -> tuple[float, float] | None:
    bounds = catalogue.interval(row.metrics, metric)
    return (float(bounds[0]), float(bounds[1])) if bounds and all(map(finite, bounds)) else None


def plot_metric_vs_param(rows: list[TrialRow], param: str, metric: str, path: Path, log_x: bool) -> bool:
    """One scatter/line plot of the trials that did not fail; False when none has both values. Where the trials
    report them: 95 % error bars (``<metric>_ci_low/high``), the ground truth's level (``<metric>_gt``, a
    horizontal line) and the shifted-audio control (``<metric>_shifted``, dashed), so "good" is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (r.params[param], float(r.metrics[metric]), r.status, r)
        for r in rows
        if r.status != "failed" and param in r.params and finite(r.metrics.get(metric))
    ]
    if not points:
        return False
    numeric = _numeric([p[0] for p in points])
    if numeric:
        points.sort(key=lambda p: p[0])
        xs = [float(p[0]) for p in points]
    else:
        labels = sorted({str(p[0]) for p in points})
        xs = [labels.index(str(p[0])) for p in points]
    ys = [p[1] for p in points]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    finished = [(x, y) for x, y, p in zip(xs, ys, points) if p[2] != "stopped_early"]
    stopped = [(x, y) for x, y, p in zip(xs, ys, points) if p[2] == "stopped_early"]
    if finished:
        ax.plot(
            *zip(*finished),
            "o-" if numeric and len(set(xs)) == len(xs) else "o",
            color="C0",
            label="finished" if stopped else metric,
        )
    if stopped:
        ax.plot(*zip(*stopped), "o", mfc="none", color="C3", label="stopped early")
    bars = [(x, y, _interval(p[3], metric)) for x, y, p in zip(xs, ys, points)]
    bars = [(x, y, iv) for x, y, iv in bars if iv is not None]
    if bars:
        ax.errorbar(
            [b[0] for b in bars],
            [b[1] for b in bars],
            fmt="none",
            ecolor="C0",
            capsize=3,
            alpha=0.6,
            yerr=[[y - iv[0] for _, y, iv in bars], [iv[1] - y for _, y, iv in bars]],
            label="95% CI",
        )
    gt = [float(p[3].metrics[f"{metric}_gt"]) for p in points if finite(p[3].metrics.get(f"{metric}_gt"))]
    shifted = [
        (x, float(p[3].metrics[f"{metric}_shifted"]))
        for x, p in zip(xs, points)
        if finite(p[3].metrics.get(f"{metric}_shifted"))
    ]
    references = _draw_references(ax, metric, gt, shifted)
    _finish(
        fig,
        ax,
        path,
        param,
        metric,
        xs,
        None if numeric else labels,
        log_x,
        bool(stopped or bars or references),
    )
    return True


def _draw_references(ax, metric: str, gt: list[float], shifted: list[tuple[float, float]]) -> bool:
    """Dashed lines at the ground truth's level (the same clips in every trial: one level) and along the
    shifted-audio control; whether any was drawn."""
    if gt:
        ax.axhline(float(np.mean(gt)), color="C2", lw=1.2, ls="--", label=f"{metric}_gt (ground truth)")
    if shifted:
        ax.plot(*zip(*shifted), "--", marker=".", color="C7", label=f"{metric}_shifted (audio shifted)")
    return bool(gt or shifted)


def _finish(
    fig,
    ax,
    path: Path,
    param: str,
    metric: str,
    xs: list[float],
    labels: list[str] | None,
    log_x: bool,
    legend: bool,
) -> None:
    """Axes (log x for wide positive ranges; ``labels`` for categorical values), title, legend; save and close."""
    import matplotlib.pyplot as plt

    if labels is None and log_x and min(xs) > 0:
        ax.set_xscale("log")
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {param.rsplit('.', 1)[-1]}")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_settings(comparison: SweepComparison, rows: list[TrialRow], path: Path, log_x: bool) -> bool:
    """A guidance comparison's plot: each setting's mean over clips x seeds with its bootstrap 95 % interval
    (else the t interval), every seed's trial as a small dot, and dashed reference lines for the ground truth
    (``Sync_gt``) and the shifted-audio control (``Sync_shifted``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, param = comparison.metric, comparison.param
    points = [r for r in comparison.rows if finite(r["mean"])]
    if not points:
        return False
    numeric = _numeric([r["value"] for r in points])
    labels = [str(r["value"]) for r in points]
    x_of = (lambda v: float(v)) if numeric else (lambda v: float(labels.index(str(v))))
    xs, ys = [x_of(r["value"]) for r in points], [r["mean"] for r in points]
    seeds = max(r["seeds"] for r in points)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    ax.plot(xs, ys, "o-", color="C0", label=f"{metric} (mean over clips x {seeds} seed{'s' * (seeds > 1)})")
    bars = [(x, *setting_interval(r), r["mean"]) for x, r in zip(xs, points)]
    bars = [b for b in bars if b[1] is not None]
    if bars:
        boot = any(r["boot_ci_low"] is not None for r in points)
        ax.errorbar(
            [b[0] for b in bars],
            [b[3] for b in bars],
            fmt="none",
            ecolor="C0",
            capsize=4,
            alpha=0.8,
            yerr=[[b[3] - b[1] for b in bars], [b[2] - b[3] for b in bars]],
            label="95% CI (bootstrap)" if boot else "95% CI",
        )
    single = [
        (x_of(r.params[param]), float(r.metrics[metric]))
        for r in rows
        if r.status != "failed"
        and r.params.get(param) in [p["value"] for p in points]
        and finite(r.metrics.get(metric))
    ]
    if seeds > 1 and single:
        ax.plot(*zip(*single), ".", color="C0", alpha=0.35, label="one seed")
    _draw_references(
        ax,
        metric,
        [r["gt"] for r in points if r["gt"] is not None],
        [(x, r["shifted"]) for x, r in zip(xs, points) if r["shifted"] is not None],
    )
    _finish(fig, ax, path, param, metric, xs, None if numeric else labels, log_x, legend=True)
    return True


def plot_curves(rows: list[TrialRow], metric: str, time_attr: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in rows if r.history]
    if not drawn:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=100)
    for i, r in enumerate(sorted(drawn, key=lambda r: r.run_name)):
        xs, ys = zip(*r.history)
        ax.plot(
            xs,
            ys,
            "--" if r.status == "stopped_early" else "-",
            marker=".",
            color=f"C{i % 10}",
            label=r.run_name,
        )
    ax.set_xlabel(time_attr)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (dashed: stopped early)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _log_x(dist: dict[str, Any]) -> bool:
    kind, args = next(iter(dist.items()))
    if kind == "loguniform":
        return True
    values = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def plot_path(metric: str, param: str) -> str:
    """A plot's artifact path on the parent run."""
    return f"plots/{metric}_vs_{param.replace('.', '_')}.png"


def summary_links(
    tracking_uri: str, experiment_id: str, parent_run_id: str, spec, comparison: SweepComparison | None
) -> dict[str, str]:
    """The sweep's places in the MLflow UI: ``runs`` (the experiment's runs table: parent and trials),
    ``parent`` (its description, metrics, artifacts), ``plot`` (the sweep's metric against the first swept
    parameter) and, for guidance comparisons, ``settings`` (the per-setting table); {} off a server."""
    if not ui_url(tracking_uri, experiment_id):
        return {}
    links = {
        "runs": ui_url(tracking_uri, experiment_id),
        "parent": ui_url(tracking_uri, experiment_id, parent_run_id),
        "plot": ui_url(
            tracking_uri, experiment_id, parent_run_id, plot_path(spec.metric, swept_keys(spec)[0])
        ),
    }
    if comparison is not None:
        links["settings"] = ui_url(tracking_uri, experiment_id, parent_run_id, f"{SETTINGS_TABLE}.json")
    return links


def plot_names(spec) -> list[str]:
    return [spec.metric, *[m for m in spec.plot_metrics if m != spec.metric]]


def write_plots(
    rows: list[TrialRow], spec, out_dir: Path, comparison: SweepComparison | None = None
) -> list[Path]:
    """Every plot of the sweep under ``out_dir``; the comparison's metric against its parameter is drawn from
    the comparison (settings with their seeds grouped)."""
    written = []
    for param in swept_keys(spec):
        dist = spec.search_space[param]
        for metric in plot_names(spec):
            path = out_dir / Path(plot_path(metric, param)).name
            if comparison is not None and (comparison.param, comparison.metric) == (param, metric):
                drawn = plot_settings(comparison, rows, path, _log_x(dist))
            else:
                drawn = plot_metric_vs_param(rows, param, metric, path, _log_x(dist))
            if drawn:
                written.append(path)
    if spec.kind == "train":
        path = out_dir / f"{spec.metric}_curves.png"
        if plot_curves(rows, spec.metric, spec.scheduler.time_attr, path):
            written.append(path)
    return written


def describe_sweep(spec, best_run_name: str = "", best_value: float | None = None) -> str:
    """The parent run's description in the MLflow UI: what was searched, for what, and (once known) the best."""
    space = "; ".join(
        f"`{key}` {', '.join(f'{k} {v}' for k, v in spec.search_space[key].items())}"
        for key in swept_keys(spec)
    )
    if SEED_KEY in spec.search_space:
        space += f", each with seeds {next(iter(spec.search_space[SEED_KEY].values()))}"
    what = f"on checkpoint `{spec.checkpoint}`" if spec.kind == "guidance" else "one training run per trial"
    lines = [
        f"**{spec.kind} sweep** `{spec.name}`, {what}: {spec.mode or 'best'} `{spec.metric}` over {space}.",
        "- trials: the child runs below this one; table `summary/trials.csv`, plots under `plots/`",
    ]
    if spec.kind == "guidance":
        lines.append(
            "- per setting: mean over clips x seeds with a bootstrap 95% CI (`summary/settings.csv`); "
            "per class, best and worst setting (`summary/per_class.csv`); paired gains "
            "`summary/comparison.json`; side by side: artifact `compare/index.html` (`asva compare` on this run)"
        )
    if best_run_name:
        lines.append(f"- best trial: **{best_run_name}** ({spec.metric} {best_value:.4g})")
    return "\n".join(lines)


def log_table(client, run_id: str, rows: list[dict[str, Any]], columns: list[str], name: str) -> None:
    """``<name>.csv`` and, when there are rows, ``<name>.json`` (an MLflow table, rendered in the UI)."""
    client.log_text(run_id, to_csv(rows, columns), f"{name}.csv")
    if rows:
        client.log_table(
            run_id, data={c: [row.get(c) for row in rows] for c in columns}, artifact_file=f"{name}.json"
        )


def log_summary(
    client, parent_run_id: str, spec, rows: list[TrialRow], comparison: SweepComparison | None = None
) -> TrialRow | None:
    """Table, plots, best trial, counts and (guidance sweeps) the paired comparison on the parent run;
    returns the best trial."""
    from mlflow.entities import Metric

    metrics = with_companions(rows, plot_names(spec))
    table = table_rows(rows, metrics)
    if comparison is not None:  # each trial's setting interval, beside its own
        metrics = [*metrics, *(f"{comparison.metric}_{k}" for k in BOOT_COLUMNS)]
        by_value = {r["value"]: r for r in comparison.rows}
        for row in table:
            setting = by_value.get(row.get(comparison.param), {})
            row.update({f"{comparison.metric}_{k}": setting.get(k) for k in BOOT_COLUMNS})
    columns = table_columns(rows, metrics)
    log_table(client, parent_run_id, table, columns, "summary/trials")
    if comparison is not None:
        log_table(client, parent_run_id, comparison.rows, list(comparison.rows[0]), SETTINGS_TABLE)
        if comparison.per_class:
            log_table(
                client, parent_run_id, comparison.per_class, list(comparison.per_class[0]), PER_CLASS_TABLE
            )
    with tempfile.TemporaryDirectory(prefix="asva-sweep-plots-") as tmp:
        for path in write_plots(rows, spec, Path(tmp), comparison):
            client.log_artifact(parent_run_id, str(path), "plots")
    best = best_row(rows, spec.metric, spec.mode)
    counts = {
        "trials": len(rows),
        "trials_stopped_early": sum(r.status == "stopped_early" for r in rows),
        "trials_failed": sum(r.status == "failed" for r in rows),
    }
    if best is not None:
        counts[f"best_{spec.metric}"] = float(best.metrics[spec.metric])
        client.set_tag(parent_run_id, TAG_BEST_RUN, best.run_id)
        client.set_tag(parent_run_id, TAG_BEST_TRIAL, best.run_name)
        client.set_tag(
            parent_run_id, TAG_NOTE, describe_sweep(spec, best.run_name, float(best.metrics[spec.metric]))
        )
    if comparison is not None:
        client.log_dict(parent_run_id, comparison.to_json(), COMPARISON_ARTIFACT)
        counts.update(comparison.parent_metrics())
    have = client.get_run(parent_run_id).data.metrics
    now = int(time.time() * 1000)
    changed = [Metric(k, float(v), now, 0) for k, v in counts.items() if have.get(k) != float(v)]
    if changed:
        client.log_batch(parent_run_id, metrics=changed)
    return best
