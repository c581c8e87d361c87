"""The latent-cache preprocessing stage (issue 6; docs/preprocess.md).

* ``jobs.preprocess`` / :func:`asva_platform.preprocess.job.run_preprocess`: build a cache with Ray Data.
* :mod:`asva_platform.preprocess.cache`: the on-disk format and the reader training uses
  (``open_cache``, ``CacheHandle``, ``collate_training_batch``).
* :mod:`asva_platform.preprocess.stages`: the decode / encode / shard-writer stages (Ray Data UDFs).
* :mod:`asva_platform.preprocess.plan`: listing, shards and the cache identity (``cache_id``).
"""
