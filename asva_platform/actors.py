"""Spreading work items over Ray actors that each load AVSyncD once (evaluation and generation jobs).

Actors get one GPU each when the cluster has GPUs (``eval.device: auto``), else ``eval.cpus_per_worker``
CPUs; ``eval.num_workers`` (0 = one per GPU, or as many as the CPUs allow) caps how many start, never more
than there are items. Items are handed out from a queue (``ActorPool``), so a slow item does not hold up
the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from asva_platform.cluster import ClusterConfig, check_fits, init_ray, joined
from asva_platform.errors import UserError
from asva_platform.progress import Progress


class PoolSettings(Protocol):
    """How many actors and what each gets (the ``eval`` section has these fields)."""

    num_workers: int
    cpus_per_worker: float
    device: str


def actor_layout(
    eval_cfg: PoolSettings, cluster_cfg: ClusterConfig, num_items: int, resources: dict[str, float]
) -> tuple[int, bool]:
    """(number of actors, one GPU each?) for the cluster's ``resources``; UserError if a local Ray is too small."""
    e = eval_cfg
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if e.device == "cuda" and gpus < 1:
        raise UserError("eval.device=cuda but the Ray cluster has no GPU")
    use_gpu = e.device == "cuda" or (e.device == "auto" and gpus >= 1)
    auto = int(gpus) if use_gpu else int(cpus // e.cpus_per_worker)
    n = max(1, min(e.num_workers or auto, num_items))
    check_fits(
        f"{n} worker(s)",
        {"CPU": n * e.cpus_per_worker, "GPU": float(n) if use_gpu else 0.0},
        resources,
        "lower eval.num_workers or eval.cpus_per_worker",
        may_grow=joined(cluster_cfg),
    )
    return n, use_gpu


def map_on_actors(
    eval_cfg: PoolSettings,
    cluster_cfg: ClusterConfig,
    worker_cls: type,
    make_spec: Callable[[str, int], Any],
    items: Sequence,
    log: Callable[[str], None] = print,
    what: str = "item",
) -> tuple[list, int, bool]:
    """Run ``worker_cls(make_spec(device, threads)).run(item)`` for every item on Ray actors.

    Returns (results in item order, number of actors, whether they had GPUs). ``worker_cls`` must have
    ``run(item)`` and ``ready()`` (which returns once the actor has loaded its models).
    """
    ray = init_ray(cluster_cfg)
    from ray.util import ActorPool

    e = eval_cfg
    n, use_gpu = actor_layout(e, cluster_cfg, len(items), ray.cluster_resources())
    spec = make_spec("cuda" if use_gpu else "cpu", max(1, int(e.cpus_per_worker)))
    actor_cls = ray.remote(worker_cls).options(num_cpus=e.cpus_per_worker, num_gpus=1 if use_gpu else 0)
    actors = [actor_cls.remote(spec) for _ in range(n)]
    log(f"{n} Ray actor(s) on {'GPU' if use_gpu else 'CPU'} for {len(items)} {what}(s)")
    try:
        ray.get([a.ready.remote() for a in actors])
        results, progress = [], Progress(what, len(items))
        for i, res in enumerate(
            ActorPool(actors).map(lambda a, item: a.run.remote(item), list(items)), start=1
        ):
            results.append(res)
            log(progress.line(i))
    finally:
        for a in actors:
            ray.kill(a)
    return results, n, use_gpu
