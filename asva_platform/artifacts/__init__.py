"""The contracts stages share, and nothing else: what one stage writes and another reads.

* :mod:`~asva_platform.artifacts.cache`: the latent-cache format on object storage (preprocessing writes it,
  training reads it).
* :mod:`~asva_platform.artifacts.weights`: model weight files localised from storage and the frozen
  encoders (VAE, audio encoder), loaded identically by every stage.
* :mod:`~asva_platform.artifacts.checkpoint`: the training-checkpoint layout, its state file, consolidation
  of every ZeRO stage and export as a ``save_pretrained`` UNet folder.
* :mod:`~asva_platform.artifacts.checkpoint_ref`: resolving a checkpoint reference (``init``, a folder, an
  MLflow run) and loading the trained UNet it names.
* :mod:`~asva_platform.artifacts.animator`: a loaded checkpoint as an inference pipeline (evaluation and
  generation both animate with it).
* :mod:`~asva_platform.artifacts.evaluation`: an evaluation's record in MLflow (metrics, per-class table,
  ``eval.json``, per-clip scores), written by evaluation, read by sweeps and the comparison page.

Stage packages (``preprocess``, ``training``, ``evaluation``, ``generation``) import these, never each other
(``tests/unit/test_layering.py``).
"""
