"""Shared by the training tests on real services (tests/integration/test_train.py) and the fault-injection
tests of training (tests/reliability): the config every run starts from, and what they read back from MLflow
and from checkpoints. The inputs themselves are the session fixture ``train_inputs`` (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from asva_platform.artifacts.checkpoint import STATE_FILE
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage, join

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")

FAST = [
    "train.lr=1e-3",
    "train.log_every=2",
    "train.val_windows=8",
    "train.num_samples=1",
    "generate.num_inference_steps=2",
    "train.prefetch_batches=2",
]


def config(train_inputs, *extra):
    overrides, _, _ = train_inputs
    return load_experiment(TINY, [*overrides, *FAST, *extra])


def mlflow_client(mlflow_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.uri)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def assert_no_duplicate_steps(client, run_id: str) -> None:
    for key in client.get_run(run_id).data.metrics:
        steps = [s for s, _ in history(client, run_id, key)]
        assert len(steps) == len(set(steps)), f"metric {key} has a step twice: {sorted(steps)}"


def trainer_state(storage: Storage, checkpoint_uri: str) -> dict:
    return storage.read_json(join(checkpoint_uri, STATE_FILE))
