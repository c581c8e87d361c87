"""The generation stage: animate any image + audio with a checkpoint (``jobs.generate``;
:func:`asva_platform.generation.job.run`)."""
