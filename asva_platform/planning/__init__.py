"""Planning a run from its config alone: FLOPs (``flops``), per-rank memory under DeepSpeed ZeRO (``memory``)
and the cluster plan behind ``asva plan`` (``plan``). Shared by the training stage, the benchmarks and the CLI."""
