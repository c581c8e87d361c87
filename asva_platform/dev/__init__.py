"""Developer tooling, not needed on a cluster: the local stack (S3 server, MLflow server, Ray head), the demo,
and small real fixtures (synthetic data, tiny weights in the real formats)."""
