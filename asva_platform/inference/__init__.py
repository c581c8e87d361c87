"""AVSyncD at run time, shared by the stages and never a stage itself: the ``generate`` section
(:mod:`.config`), weight files localised from storage and the frozen encoders (:mod:`.weights`), checkpoints
resolved, loaded, consolidated and exported (:mod:`.checkpoints`), and a loaded checkpoint as an inference
pipeline (:mod:`.animator`: evaluation, generation and sweeps animate with it)."""
