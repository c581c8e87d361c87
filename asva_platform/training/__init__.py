"""The training stage: Ray Train + DeepSpeed (``jobs.train``; :func:`asva_platform.training.job.run`)."""
