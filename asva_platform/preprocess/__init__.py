"""The latent-cache preprocessing stage (docs/preprocess.md).

* ``jobs.preprocess`` / :func:`asva_platform.preprocess.job.run`: build a cache with Ray Data.
* :mod:`asva_platform.preprocess.stages`: the decode / encode / shard-writer stages (Ray Data UDFs).
* :mod:`asva_platform.preprocess.plan`: listing, shards and the cache identity (``cache_id``).

The on-disk format it writes is a shared contract: :mod:`asva_platform.artifacts.cache`.
"""
