"""``tests/learning`` starts no service either: see tests/service_guard.py. The toy data and the UNet trained
on it are shared by the tier's tests (drawn and trained once per session)."""

import pytest

from tests.service_guard import (  # noqa: F401 - fixtures, used by name
    mlflow_server,
    no_service_attempt_swallowed,
    no_services_started,
    ray_cluster,
    s3_server,
)


@pytest.fixture(scope="session")
def toy():
    """The learning tier's toy data (tests/learning/toy_training.py), drawn once per session."""
    from tests.learning.toy_training import make_toy

    return make_toy()


@pytest.fixture(scope="session")
def trained(toy):
    """The toy UNet trained with the recipe's settings (configs/toy.yaml), once per session."""
    from tests.learning.toy_training import train_unet

    exp, train, _, _ = toy
    return train_unet(exp, train, exp.model.audio_cond_drop_prob)
