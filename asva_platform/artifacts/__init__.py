"""The records stages hand each other, and nothing else: what one stage writes and another reads, each typed,
versioned (:mod:`.records`) and defined once for its writer and its readers.

* :mod:`~asva_platform.artifacts.cache`: the latent cache on object storage and its manifest
  (preprocessing writes it, training reads it).
* :mod:`~asva_platform.artifacts.checkpoint`: a training checkpoint's layout, folder names and trainer state,
  and the record of which checkpoint a reference named.
* :mod:`~asva_platform.artifacts.evaluation`: an evaluation's record (its generation settings, metrics,
  per-class numbers and clips) and how it sits in MLflow; written by evaluation, read by sweeps and the
  comparison page.

What runs on them (loading weights, consolidating checkpoints, animating) is :mod:`asva_platform.inference`.
Stage packages (``preprocess``, ``training``, ``evaluation``, ``generation``) import these, never each other
(``tests/unit/test_layering.py``).
"""
