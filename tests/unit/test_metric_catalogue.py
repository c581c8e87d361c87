"""The metric catalogue: every reported key is declared once, with its direction, interval and display order."""

from __future__ import annotations

import pytest

from asva_model.metrics import catalogue
from asva_model.metrics.catalogue import EVALUATION_METRICS, Metric
from asva_platform.training.job import TRAINING_METRICS, VALIDATION


def test_every_key_is_declared_once_across_evaluation_and_training():
    keys = [k for m in EVALUATION_METRICS + TRAINING_METRICS + (VALIDATION,) for k in m.keys]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("key", "mode"),
    [
        ("FID", "min"),
        ("FVD", "min"),
        ("SyncLag_s", "min"),
        ("IA", "max"),
        ("AlignSync", "max"),
        ("Sync", "max"),
        ("Sync_ci_low", "max"),  # the conservative end of a higher-is-better interval is an objective
        ("Sync_ci_high", None),
        ("Sync_win_rate_ci_low", "max"),
        ("Sync_shifted", None),
        ("Sync_gt", None),
        ("IA_std", None),
        ("num_clips", None),
        ("not_a_metric", None),
    ],
)
def test_the_direction_of_every_reported_key(key, mode):
    assert catalogue.mode(key) == mode


def test_training_metrics_have_their_directions_through_the_same_rule():
    everything = EVALUATION_METRICS + TRAINING_METRICS + (VALIDATION,)
    assert [
        catalogue.mode(k, everything) for k in ("loss", "val_loss", "step_time_s", "samples_per_s", "lr")
    ] == ["min", "min", "min", "max", None]
    low_is_good = (Metric("Lag", "lower", interval=True),)
    assert (
        catalogue.mode("Lag_ci_high", low_is_good) == "min"
        and catalogue.mode("Lag_ci_low", low_is_good) is None
    )


def test_intervals_order_and_tables_come_from_the_catalogue():
    reported = {
        "Sync": 0.4,
        "Sync_ci_low": 0.3,
        "Sync_ci_high": 0.5,
        "FVD": 12.0,
        "IA_std": 1.0,
        "IA": 20.0,
        "num_clips": 8.0,
        "SyncLag_s": 0.1,
        "Sync_shifted": 0.2,
    }
    assert catalogue.interval(reported, "Sync") == (0.3, 0.5) and catalogue.interval(reported, "FVD") is None
    assert list(catalogue.headline(reported)) == ["FVD", "IA", "Sync", "Sync_shifted", "SyncLag_s"]
    assert catalogue.in_order(reported) == ["FVD", "IA", "Sync", "Sync_shifted"]  # the lag is not a column
    assert [m.name for m in catalogue.ranked(reported)] == ["FVD", "IA", "Sync"]  # a reference is not ranked
    columns = catalogue.table_columns()
    assert columns[:7] == ("FID", "FVD", "IA", "IT", "RelSync", "AlignSync", "Sync")
    assert "Sync_ci_low" in columns and "IA_std" not in columns and "SyncLag_s" not in columns


def test_reported_keys_follow_the_families_asked_for():
    assert catalogue.reported_keys(["fid", "ia"]) == ("FID", "IA", "IA_std")
    assert catalogue.reported_keys(["sync"])[:3] == ("Sync", "Sync_ci_low", "Sync_ci_high")
