"""One MLflow run per training run, resumable, with no step logged twice.

* The driver finds the run by the tag ``asva.train_run`` (the run's checkpoint location) or creates it
  (params = flattened config, standard tags + training tags). Re-running the job with the same name, or
  a FailureConfig restart, therefore logs into the SAME MLflow run; the run id is also stored in every
  checkpoint (for the record).
* Rank 0 logs through :class:`StepLogger`: each metric group (``train``, ``val``) keeps a high-water
  mark in a run tag that is written in the same ``log_batch`` request as the metrics. After a restart
  from an older checkpoint, steps up to the mark are skipped, so the metric history never holds a step
  twice.
"""

from __future__ import annotations

import time

from asva_platform import tracking
from asva_platform.tracking import LOGGED_STEP_TAG, RESUME_CHANGED_TAG, TAG_RESUMES, TAG_TRAIN_RUN


def find_run(client, experiment_id: str, run_key: str) -> str | None:
    """The newest run of the experiment tagged with ``run_key``, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_TRAIN_RUN}` = '{run_key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_training_run(
    uri: str,
    experiment_name: str,
    config: tracking.LoggedConfig,
    run_key: str,
    run_name: str,
    tags: dict[str, str],
    description: str,
    parent_run_id: str = "",
) -> tuple[str, bool]:
    """Find (resume) or create the training run in MLflow experiment ``experiment_name``; returns ``(run_id,
    resumed)``.

    A resumed run is set back to RUNNING; params it already has are kept (MLflow params are immutable),
    new or changed ones are recorded in ``config-resume-<n>.yaml`` and the ``asva.resumes`` tag.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = tracking.get_or_create_experiment(client, experiment_name, "train")
    run_id = find_run(client, exp_id, run_key)
    all_tags = {**tags, TAG_TRAIN_RUN: run_key}
    if run_id is None:
        _, run_id = tracking.start_run(
            uri,
            experiment_name,
            run_name,
            config,
            all_tags,
            job="train",
            parent_run_id=parent_run_id,
            description=description,
        )
        return run_id, False
    run = client.get_run(run_id)
    resumes = int(run.data.tags.get(TAG_RESUMES, "0")) + 1
    client.update_run(run_id, status="RUNNING")
    have = run.data.params
    new = {k: v for k, v in config.params.items() if k not in have}
    if new:
        tracking.log_params_batched(client, run_id, new)
    changed = sorted(k for k, v in config.params.items() if k in have and have[k] != v)
    for key, value in {
        **tracking.standard_tags("train", tags),
        TAG_RESUMES: str(resumes),
        tracking.TAG_NOTE: description,
    }.items():
        client.set_tag(run_id, key, value)
    if changed:
        client.set_tag(run_id, RESUME_CHANGED_TAG.format(n=resumes), ",".join(changed)[:5000])
        client.log_text(run_id, config.yaml, f"config-resume-{resumes}.yaml")
    return run_id, True


class StepLogger:
    """Rank 0's MLflow writer: metrics by step with per-group high-water marks, and artifacts."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        tags = self.client.get_run(run_id).data.tags
        self._marks: dict[str, int] = {}
        prefix = LOGGED_STEP_TAG.format(group="")
        for key, value in tags.items():
            if key.startswith(prefix):
                self._marks[key[len(prefix) :]] = int(value)

    def logged_up_to(self, group: str) -> int:
        """The last step logged for ``group`` (-1 if none)."""
        return self._marks.get(group, -1)

    def should_log(self, group: str, step: int) -> bool:
        return step > self.logged_up_to(group)

    def log(self, group: str, step: int, metrics: dict[str, float]) -> bool:
        """Log ``metrics`` at ``step`` unless this group already has that step; True if logged."""
        from mlflow.entities import Metric, RunTag

        if not self.should_log(group, step):
            return False
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        mark = RunTag(LOGGED_STEP_TAG.format(group=group), str(step))
        for i in range(0, len(items), 900):  # MLflow takes at most 1000 metrics per batch
            last = i + 900 >= len(items)
            self.client.log_batch(self.run_id, metrics=items[i : i + 900], tags=[mark] if last else [])
        self._marks[group] = step
        return True

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, local_path, artifact_path)

    def log_image(self, image, key: str, step: int) -> None:
        """An image under ``key`` at ``step``: the run page's image view slides through the steps."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)
