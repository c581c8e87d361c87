"""Sweep files: a base experiment config, a dotted-key search space, and how Tune should search it.

A sweep file is YAML validated with the same typed-config rules as experiment configs: every
search-space key must be a real key path of the experiment config, and every value the space can
produce must pass that key's type and range checks, before anything starts::

    name: guidance-scale              # MLflow experiment of the sweep (one per sweep)
    kind: guidance                    # train | guidance
    base_config: ../configs/tiny.yaml # relative to the sweep file
    overrides: [eval.max_videos=2]    # dotted overrides applied to the base config first
    checkpoint: ""                    # guidance sweeps: checkpoint URI or MLflow run id
    metric: sync_score
    mode: max
    search_space:
      generate.audio_guidance_scale: {grid: [1, 4, 8]}
    scheduler: {type: fifo}
    search: grid
    seeds: [0, 1, 2]                  # guidance sweeps: generation seeds per setting (grouped in the summary)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asva_model.metrics import catalogue
from asva_platform import config as cfg
from asva_platform.config import ConfigError, require
from asva_platform.experiment import SEED_KEY, ExperimentConfig, load_experiment
from asva_platform.training import job as training

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")


@dataclass
class SchedulerConfig:
    type: Literal["asha", "fifo"] = "fifo"
    """`asha`: stop bad trials early on intermediate results; `fifo`: run every trial to the end."""
    max_t: int = 0
    """ASHA: the longest a trial may run, in reported steps (0 = the base config's train.max_steps)."""
    grace_period: int = 1
    """ASHA: reported steps every trial gets before it may be stopped."""
    reduction_factor: int = 2
    """ASHA: keep the top 1/reduction_factor of trials at each rung."""
    time_attr: str = "step"
    """The reported metric ASHA measures progress in."""

    def __post_init__(self) -> None:
        require(self.grace_period >= 1, "grace_period", "must be >= 1")
        require(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        require(self.max_t >= 0, "max_t", "must be >= 0")


@dataclass
class SweepSpec:
    name: str = ""
    """Sweep name; also the MLflow experiment holding the parent run and one child run per trial."""
    kind: Literal["train", "guidance"] = "guidance"
    """`train`: a training run per trial; `guidance`: generation + evaluation on a fixed checkpoint."""
    base_config: str = ""
    """Experiment YAML the trials start from, relative to the sweep file."""
    overrides: list[str] = field(default_factory=list)
    """Dotted overrides applied to the base config before the search space."""
    checkpoint: str = ""
    """Guidance sweeps: the checkpoint to evaluate (storage URI, or an MLflow run id of a training run)."""
    metric: str = ""
    """Metric Tune optimizes (reported by every trial); empty = `loss` for train sweeps, `AlignSync` (else
    `Sync`) for guidance sweeps."""
    mode: Literal["", "min", "max"] = ""
    """Whether lower or higher `metric` is better; empty = the metric's direction in the metric catalogue
    (`asva_model.metrics.catalogue`: loss, FID, FVD, SyncLag_s: min; IA, IT, RelSync, AlignSync, Sync,
    Sync_ci_low, Sync_win_rate: max)."""
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Dotted config key -> one distribution: {choice: [...]}, {grid: [...]}, {uniform: [lo, hi]},
    {loguniform: [lo, hi]}, {randint: [lo, hi)}."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Trial scheduler."""
    search: Literal["random", "grid", "optuna"] = "random"
    """Search algorithm: `random`/`grid` (Tune's basic variant generator) or `optuna` (if installed)."""
    num_samples: int = 1
    """Trials to sample (with grid distributions: repeats of the whole grid)."""
    max_concurrent_trials: int = 1
    """Trials running at once."""
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    """Resources of each trial's driver (guidance trials do their work there; e.g. {CPU: 1, GPU: 1})."""
    storage_path: str = ""
    """Where Tune keeps its state (default: <storage.root>/sweeps); re-running the sweep resumes from it."""
    plot_metrics: list[str] = field(default_factory=list)
    """Reported metrics plotted against each swept parameter on the parent run, besides `metric`
    (e.g. FVD next to Sync for a guidance sweep)."""
    evaluate: bool = False
    """Train sweeps: each trial that trains to the end then evaluates its final checkpoint in its own process,
    with the base config's `eval` and `generate` sections, logs the evaluation to its training run and reports
    the evaluation's metrics (e.g. Sync) with its per-clip scores; the summary pairs every trial with the
    baseline (the first of `points_to_evaluate`) on the same clips. A trial the scheduler stops is not
    evaluated."""
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    """Settings tried first, each a {search-space key: value} map (Tune's points_to_evaluate), before the
    search samples more; the first is the baseline of a train sweep's comparison (e.g. the current recipe)."""
    seeds: list[int] = field(default_factory=list)
    """Guidance sweeps: generation seeds (`generate.seed`) to run every setting with, e.g. [0, 1, 2]; short for a
    `generate.seed: {grid: [...]}` search dimension. Trials that differ only in seed are grouped: the summary
    gives each setting's mean over clips x seeds with a bootstrap 95 % interval (docs/sweeps.md)."""

    def __post_init__(self) -> None:
        if self.seeds:
            require(self.kind == "guidance", "seeds", "only guidance sweeps repeat a setting over seeds")
            require(
                all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.seeds),
                "seeds",
                f"must be integers >= 0, got {self.seeds!r}",
            )
            require(len(set(self.seeds)) == len(self.seeds), "seeds", f"must be distinct, got {self.seeds!r}")
            grid = {"grid": list(self.seeds)}
            require(
                self.search_space.get(SEED_KEY, grid) == grid,
                "seeds",
                f"give the seeds either here or as search_space.{SEED_KEY}, not both",
            )
            self.search_space = {**self.search_space, SEED_KEY: grid}
        require(
            bool(self.name) and "/" not in self.name,
            "name",
            f"must be non-empty without '/', got {self.name!r}",
        )
        require(bool(self.base_config), "base_config", "must name the experiment YAML the trials start from")
        require(bool(self.search_space), "search_space", "must have at least one key")
        require(self.num_samples >= 1, "num_samples", "must be >= 1")
        require(self.max_concurrent_trials >= 1, "max_concurrent_trials", "must be >= 1")
        for key, dist in self.search_space.items():
            _check_distribution(key, dist)
        if self.search == "grid":
            bad = [k for k, d in self.search_space.items() if next(iter(d)) != "grid"]
            require(not bad, "search", f"`grid` needs grid distributions, not for {bad}")
        if self.search == "optuna":
            bad = [k for k, d in self.search_space.items() if next(iter(d)) == "grid"]
            require(
                not bad, "search", f"`optuna` samples distributions; use choice instead of grid for {bad}"
            )
        require(
            not self.evaluate or self.kind == "train",
            "evaluate",
            "only train sweeps evaluate their trials (a guidance sweep's trials are evaluations)",
        )
        for i, point in enumerate(self.points_to_evaluate):
            unknown = sorted(set(point) - set(swept_keys(self)))
            require(
                isinstance(point, dict) and not unknown and bool(point),
                f"points_to_evaluate[{i}]",
                f"must map search-space keys to values, got {point!r}"
                + (f" ({', '.join(unknown)} not in search_space)" if unknown else ""),
            )
        require(
            not (self.points_to_evaluate and self.search == "grid"),
            "points_to_evaluate",
            "a grid already lists every setting; use search: random (or optuna) to try these first",
        )
        require(
            not (self.scheduler.type == "asha" and self.kind == "guidance"),
            "scheduler.type",
            "asha needs intermediate results; guidance trials report once (use fifo)",
        )


def _check_distribution(key: str, dist: dict[str, Any]) -> None:
    where = f"search_space.{key}"
    if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {dist!r}")
    kind, args = next(iter(dist.items()))
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {args!r}")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
        raise ConfigError(f"{where}.{kind}: expected [low, high], got {args!r}")
    lo, hi = args
    if not lo < hi:
        raise ConfigError(f"{where}.{kind}: low must be < high, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}.loguniform: bounds must be > 0, got {args!r}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}.randint: bounds must be integers, got {args!r}")


def swept_keys(spec: SweepSpec) -> list[str]:
    """The search space's settings: every key but the generation seed (a repeat of the same setting)."""
    return [k for k in spec.search_space if k != SEED_KEY]


def representative_values(dist: dict[str, Any]) -> list[Any]:
    """Values that bound what a distribution can produce (all of a list; both ends of a range)."""
    kind, args = next(iter(dist.items()))
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return [float(args[0]), float(args[1])]


@dataclass
class LoadedSweep:
    spec: SweepSpec
    base: ExperimentConfig
    path: Path

    def trial_config(self, params: dict[str, Any]) -> ExperimentConfig:
        """The experiment config of one trial: the base with the trial's dotted values, re-validated."""
        return cfg.replace_dotted(self.base, params, source=f"{self.path} trial {params}")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedSweep:
    """Load and fully validate a sweep file; ``overrides`` may target the sweep (``num_samples=8``) or, with
    a ``base.`` prefix, the base experiment config (``base.train.max_steps=10``)."""
    path = Path(path)
    sweep_over = [o for o in overrides if not o.startswith("base.")]
    base_over = [o[len("base.") :] for o in overrides if o.startswith("base.")]
    spec = cfg.load(SweepSpec, path, sweep_over)
    base_path = (path.parent / spec.base_config).resolve()
    try:
        base = load_experiment(base_path, [*spec.overrides, *base_over])
    except ConfigError as err:
        raise ConfigError(f"{path}: base_config: {err}") from None
    for key, dist in spec.search_space.items():
        try:
            cfg.check_key_path(ExperimentConfig, key)
        except ConfigError as err:
            raise ConfigError(f"{path}: search_space.{err}") from None
        for value in representative_values(dist):
            try:
                cfg.replace_dotted(base, {key: value}, source="")
            except ConfigError as err:
                reason = str(err).removeprefix(": ")
                raise ConfigError(
                    f"{path}: search_space.{key}: value {value!r} is invalid ({reason})"
                ) from None
    for i, point in enumerate(spec.points_to_evaluate):
        try:
            cfg.replace_dotted(base, point, source="")
        except ConfigError as err:
            reason = str(err).removeprefix(": ")
            raise ConfigError(f"{path}: points_to_evaluate[{i}]: {reason}") from None
    if spec.kind == "guidance" and not spec.checkpoint:
        raise ConfigError(f"{path}: checkpoint: a guidance sweep needs a checkpoint URI or MLflow run id")
    reported = reported_metrics(spec.kind, base, spec.evaluate)
    spec = _with_default_objective(spec, reported, path)
    checks = [("metric", [spec.metric]), ("plot_metrics", spec.plot_metrics)]
    if spec.scheduler.type == "asha":
        checks.append(("scheduler.time_attr", [spec.scheduler.time_attr]))
    for key, names in checks:
        unknown = [n for n in names if n not in reported]
        if unknown:
            raise ConfigError(
                f"{path}: {key}: {', '.join(unknown)} is not reported by every {spec.kind} trial "
                f"of this config (choose from {', '.join(sorted(reported))})"
            )
    return LoadedSweep(spec, base, path)


# The reported numbers and their directions come from the one catalogue of each stage that reports them:
# evaluation's (asva_model.metrics.catalogue) and the training loop's (asva_platform.training.job).
CATALOGUE = (
    catalogue.EVALUATION_METRICS
    + training.TRAINING_METRICS
    + (training.VALIDATION,)
    + training.AUDIO_GAP_METRICS
)


def _with_default_objective(spec: SweepSpec, reported: set[str], path: Path) -> SweepSpec:
    """Fill an empty ``metric``/``mode`` from the kind's default metric and the metric's known direction."""
    metric = spec.metric
    if not metric:
        candidates = ["loss"] if spec.kind == "train" else ["AlignSync", "Sync"]
        metric = next((m for m in candidates if m in reported), candidates[0])
    mode = spec.mode or catalogue.mode(metric, CATALOGUE)
    if not mode:
        raise ConfigError(f"{path}: mode: set min or max ({metric!r} has no better direction of its own)")
    return dataclasses.replace(spec, metric=metric, mode=mode)


def reported_metrics(kind: str, base: ExperimentConfig, evaluate: bool = False) -> set[str]:
    """Metrics every trial of ``kind`` reports to Tune with this base config: what `metric` (and ASHA's
    intermediate decisions) may use; a train sweep that ``evaluate``s adds its evaluation's metrics."""
    evaluated = set(catalogue.reported_keys(base.eval.metrics.metrics))
    if kind == "guidance":
        return evaluated
    t = base.train
    out = set(training.REPORTED_METRICS)
    if (
        t.validate_every
        and t.val_windows
        and all(n % t.validate_every == 0 for n in (t.log_every, t.checkpoint_every))
    ):
        out.add(training.VALIDATION_METRIC)
        out.update(m.name for m in training.AUDIO_GAP_METRICS)
    return out | evaluated if evaluate else out


def tune_search_space(spec: SweepSpec) -> dict[str, Any]:
    """The search space as Tune distributions, keyed by the same dotted config paths."""
    from ray import tune

    out = {}
    for key, dist in spec.search_space.items():
        kind, args = next(iter(dist.items()))
        if kind == "grid":
            out[key] = tune.grid_search(list(args))
        elif kind == "choice":
            out[key] = tune.choice(list(args))
        elif kind == "uniform":
            out[key] = tune.uniform(*args)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*args)
        else:
            out[key] = tune.randint(*args)
    return out


def grid_size(spec: SweepSpec) -> int:
    """Trials a sweep produces: product of grid sizes x num_samples."""
    n = math.prod(len(d["grid"]) for d in spec.search_space.values() if "grid" in d)
    return n * spec.num_samples
