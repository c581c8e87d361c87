"""The evaluation stage: generate the test windows and score them (``jobs.evaluate``; :func:`asva_platform.evaluation.job.run`)."""
