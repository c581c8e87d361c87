"""Tune schedulers of the platform's sweeps.

ASHA places a rung at ``max_t`` whenever ``max_t / grace_period`` is a power of the reduction factor (one rung
when the two are equal). A report at that rung is compared with the trials already recorded there and, when
worse, stopped. For a train sweep that evaluates its trials (``evaluate: true``) that stop lands after the last
training step and before the evaluation: the trial ends as if finished, with no evaluation metrics and no
scores for the paired comparison. :class:`EvaluatingASHA` records such a report (later trials are still judged
against it) and lets the trial go on to its evaluation.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class EvaluatingASHA(ASHAScheduler):
    """ASHA that stops trials only before ``max_t``: a trial that trained to the end still evaluates."""

    def __init__(self, **kwargs) -> None:
        # ASHA's own stop at max_t (``stop_last_trials``) would end the trial before its evaluation too
        super().__init__(**{**kwargs, "stop_last_trials": False})

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) >= self._max_t:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
