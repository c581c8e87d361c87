"""What the driver decides before taking resources when a run resumes: the ZeRO stage must match, another
worker count keeps the global batch through gradient accumulation (or fails in one line), and each rank's
data position after a reshard; the placement record's tag format."""

from __future__ import annotations

import json

import pytest

from asva_platform.artifacts.checkpoint import RankPlacement, TrainerState
from asva_platform.errors import UserError
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage
from asva_platform.training.checkpoint import resharded_position
from asva_platform.training.job import SNAPSHOT, check_resumable
from asva_platform.training.loop import placement_summary


def _run_dir(tmp_path, **state) -> str:
    """A run folder as Ray Train leaves it: the snapshot naming the latest checkpoint, and its state file."""
    run = tmp_path / "run"
    (run / "step_00000006").mkdir(parents=True)
    (run / SNAPSHOT).write_text(
        json.dumps({"latest_checkpoint_result": {"checkpoint_dir_name": "step_00000006"}})
    )
    TrainerState(**state).save(run / "step_00000006")
    return str(run)


def _cfg(*overrides):
    return load_experiment(
        None,
        [
            "train.batch_size_per_worker=2",
            "train.gradient_accumulation_steps=1",
            "train.zero_stage=2",
            *overrides,
        ],
    )


def test_a_new_run_and_the_same_worker_count_change_nothing(tmp_path):
    assert check_resumable(_cfg("train.num_workers=2"), Storage(), str(tmp_path / "none")) == (
        None,
        _cfg("train.num_workers=2"),
    )
    run = _run_dir(tmp_path, step=6, samples_seen=24, world_size=2, zero_stage=2, global_batch_size=4)
    ckpt, cfg = check_resumable(_cfg("train.num_workers=2"), Storage(), run, log_fn=lambda _: None)
    assert ckpt.endswith("step_00000006") and cfg.train.gradient_accumulation_steps == 1


def test_another_worker_count_keeps_the_global_batch(tmp_path):
    run = _run_dir(tmp_path, step=6, samples_seen=24, world_size=2, zero_stage=2, global_batch_size=4)
    said = []
    _, cfg = check_resumable(_cfg("train.num_workers=1"), Storage(), run, log_fn=said.append)
    assert cfg.train.gradient_accumulation_steps == 2 and cfg.train.global_batch_size == 4
    assert "from 2 to 1 workers: gradient accumulation 1 -> 2 keeps the global batch at 4 clips" in said[0]
    # checkpoints written before the field existed: samples per step tell the global batch
    old = _run_dir(tmp_path / "old", step=6, samples_seen=48, world_size=4, zero_stage=2)
    _, cfg = check_resumable(_cfg("train.num_workers=2"), Storage(), old, log_fn=lambda _: None)
    assert cfg.train.global_batch_size == 8 and cfg.train.gradient_accumulation_steps == 2


def test_impossible_batches_and_another_stage_are_one_line_errors(tmp_path):
    run = _run_dir(tmp_path, step=6, samples_seen=24, world_size=2, zero_stage=2, global_batch_size=4)
    with pytest.raises(UserError, match="divides no whole number of accumulation steps"):
        check_resumable(_cfg("train.num_workers=3"), Storage(), run)
    with pytest.raises(UserError, match="written with ZeRO stage 2; set train.zero_stage=2"):
        check_resumable(_cfg("train.num_workers=2", "train.zero_stage=3"), Storage(), run)


def test_data_position_after_a_reshard_is_the_same_number_of_clips():
    assert resharded_position(6, 2, 2) == 6
    assert resharded_position(6, 2, 1) == 12  # 2 ranks x 6 batches = 1 rank x 12 batches
    assert resharded_position(6, 1, 2) == 3
    assert resharded_position(5, 0, 3) == 5  # unknown writer count: as saved


def test_placement_tag_names_each_rank_and_its_node():
    placement = [
        RankPlacement(0, "1f3a9c2e" + "0" * 48, "10.0.0.1", "a"),
        RankPlacement(1, "7b0d44a1" + "f" * 48, "10.0.0.2", "b"),
    ]
    assert placement_summary(placement) == "0:1f3a9c2e,1:7b0d44a1"


def test_an_elastic_range_keeps_the_global_batch_on_every_worker_count():
    from asva_platform.config import ConfigError
    from asva_platform.training.job import scaling_config, trainer_spec
    from asva_platform.training.spec import RunSpec

    cfg = _cfg(
        "train.num_workers=4",
        "train.min_workers=1",
        "train.elastic_resize_check_s=5",
        "train.batch_size_per_worker=1",
        "train.gradient_accumulation_steps=3",
    )  # 12 clips a step
    scaling = scaling_config(cfg.train)
    assert (scaling.min_workers, scaling.max_workers, scaling.elastic_resize_monitor_interval_s) == (1, 4, 5)
    spec = trainer_spec(cfg, RunSpec("", "", ""))
    for world, accumulation in ((4, 3), (3, 4), (2, 6), (1, 12)):
        t = spec.on_world(world).train
        assert (t.num_workers, t.gradient_accumulation_steps, t.global_batch_size) == (
            world,
            accumulation,
            12,
        )
    assert spec.on_world(4) is spec
    # 3 workers x 2 clips divide no whole number of steps into 8 clips: refused when the config is read
    with pytest.raises(
        ConfigError, match=r"train.min_workers: the global batch of 8 clips .* on \[3\] workers"
    ):
        _cfg("train.num_workers=4", "train.min_workers=2")
    with pytest.raises(ConfigError, match="train.min_workers: must be between 0"):
        _cfg("train.num_workers=2", "train.min_workers=3")
    fixed = scaling_config(_cfg("train.num_workers=2").train)  # 0 and num_workers both mean a fixed size
    assert (fixed.min_workers, fixed.max_workers) == (2, 2)
    assert scaling_config(_cfg("train.num_workers=2", "train.min_workers=2").train).num_workers == 2


def test_a_local_ray_too_small_is_refused_naming_the_size_ray_train_starts_with(monkeypatch):
    import sys

    from asva_platform.training.job import check_local_cluster_fits

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # as in a fresh driver: no Ray started yet
    cfg = _cfg(
        "train.num_workers=4",
        "train.batch_size_per_worker=1",
        "train.gradient_accumulation_steps=1",
        "cluster.num_cpus=2",
        "train.cpus_per_worker=1",
        "train.use_gpu=false",
        "train.precision=fp32",
    )
    with pytest.raises(
        UserError, match=r"^train.num_workers: 4 workers x cpus_per_worker 1 needs 4 CPU \(cluster has 2\)"
    ):
        check_local_cluster_fits(cfg.train, cfg.cluster)
    elastic = _cfg(
        "train.num_workers=4",
        "train.min_workers=3",
        "train.batch_size_per_worker=1",
        "train.gradient_accumulation_steps=3",
        "cluster.num_cpus=2",
        "train.cpus_per_worker=1",
        "train.use_gpu=false",
        "train.precision=fp32",
    )
    with pytest.raises(
        UserError, match=r"^train.min_workers: 3 workers x cpus_per_worker 1 needs 3 CPU \(cluster has 2\)"
    ):
        check_local_cluster_fits(elastic.train, elastic.cluster)
    fits = _cfg(
        "train.num_workers=4",
        "train.min_workers=2",
        "train.batch_size_per_worker=1",
        "train.gradient_accumulation_steps=3",
        "cluster.num_cpus=2",
        "train.cpus_per_worker=1",
        "train.use_gpu=false",
        "train.precision=fp32",
    )
    check_local_cluster_fits(fits.train, fits.cluster)  # elastic: starts with the 2 it can have
