"""The scheduler of sweeps that evaluate their trials: ASHA's rung at max_t must not stop a trial between its
last training step and its evaluation (CI saw a recipe sweep's second trial end with no eval metrics)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sweeps.schedulers import EvaluatingASHA


def decisions(scheduler_class, reports: list[tuple[str, int, float]]) -> list[str]:
    """Feed (trial id, step, loss) reports to a fresh scheduler, set up as tune_runner sets up an evaluating
    sweep's; its decision for each."""
    scheduler = scheduler_class(
        metric="loss",
        mode="min",
        time_attr="step",
        max_t=4,
        grace_period=2,
        reduction_factor=2,
        stop_last_trials=False,
    )
    trials = {}
    out = []
    for trial_id, step, loss in reports:
        if trial_id not in trials:
            trials[trial_id] = SimpleNamespace(trial_id=trial_id)
            scheduler.on_trial_add(None, trials[trial_id])
        out.append(scheduler.on_trial_result(None, trials[trial_id], {"step": step, "loss": loss}))
    return out


# b is worse than a at both rungs (steps 2 and 4 with grace 2, max_t 4, factor 2)
AT_LAST_STEP = [("a", 2, 1.0), ("a", 4, 0.5), ("b", 2, 0.9), ("b", 4, 0.8)]
BEFORE_LAST_STEP = [("a", 2, 1.0), ("b", 2, 2.0)]


def test_plain_asha_stops_a_worse_trial_at_its_last_step():
    """The control: plain ASHA (what ran before), even with stop_last_trials=False, stops b at max_t's rung,
    before its evaluation."""
    assert decisions(ASHAScheduler, AT_LAST_STEP)[-1] == TrialScheduler.STOP


def test_a_worse_trial_at_its_last_step_goes_on_to_evaluate():
    assert decisions(EvaluatingASHA, AT_LAST_STEP) == [TrialScheduler.CONTINUE] * 4


@pytest.mark.parametrize("scheduler_class", [ASHAScheduler, EvaluatingASHA])
def test_a_worse_trial_before_its_last_step_is_still_stopped(scheduler_class):
    assert decisions(scheduler_class, BEFORE_LAST_STEP) == [TrialScheduler.CONTINUE, TrialScheduler.STOP]
