"""``tests/unit`` starts no service: see tests/service_guard.py."""

from tests.service_guard import (  # noqa: F401 - fixtures, used by name
    mlflow_server,
    no_service_attempt_swallowed,
    no_services_started,
    ray_cluster,
    s3_server,
)
