"""``train_loop_per_worker``: what every Ray Train worker runs (DeepSpeed engine, data, checkpoints, logging).

One optimizer step = ``gradient_accumulation_steps`` micro-batches per rank. Every ``log_every`` steps all
ranks report (a barrier) with metrics averaged over ranks; every ``checkpoint_every`` steps and at the end
they save their shards and report them as one checkpoint; rank 0 alone writes MLflow.

:class:`WorkerTrainer` is the loop and the step. It reads its rank, data shard, checkpoint to resume from and
where reports go from a :class:`TrainContext`: :class:`RayTrainContext` inside Ray Train (the one place this
module touches Ray Train's context), or :class:`LocalContext` in a plain process (benchmarks, tests, a
debugger), where the very same trainer and step run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from asva_model.build import build_noise_scheduler, build_unet
from asva_model.metrics.catalogue import Metric
from asva_model.objective import loss_from_inputs
from asva_platform import config as cfgmod
from asva_platform.artifacts.cache import open_cache
from asva_platform.artifacts.checkpoint import RankPlacement, Resume, checkpoint_dir_name
from asva_platform.inference.weights import localize_model_paths
from asva_platform.planning import flops as flops_mod
from asva_platform.progress import console, progress_line
from asva_platform.storage import Storage, join
from asva_platform.tracking import TAG_RANK_NODES, TAG_WORLD_SIZE
from asva_platform.training.checkpoint import (
    TrainerState,
    load_engine,
    resharded_position,
    save_engine,
    trainable_checksum,
)
from asva_platform.training.data import CachedSource, OnlineSource, WorkerInfo, seeded_generator
from asva_platform.training.deepspeed_setup import at_optimizer_step, initialize_engine
from asva_platform.training.ema import TrainableEMA
from asva_platform.training.run_tracking import StepLogger
from asva_platform.training.spec import TrainerSpec
from asva_platform.training.validation import Validator, reduce_values

log = logging.getLogger(__name__)
RAY_REPORT_MODULE = "ray.train.v2._internal.execution.context"
"""Whose ``logger`` (named by its file path) logs "Reporting training result <n>: TrainingReport(...)" at every
report in Ray Train 2.60."""


def quiet_ray_report_log() -> None:
    """Ray Train logs every report's whole metrics dict at INFO on each worker; the rank-0 progress line says
    the same in one line. Another Ray without that module keeps its lines."""
    import importlib

    try:
        importlib.import_module(RAY_REPORT_MODULE).logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


TRAINING_METRICS: tuple[Metric, ...] = (
    Metric("step", "reference"),
    Metric("epoch", "reference"),
    Metric("loss", "lower"),
    Metric("lr", "reference"),
    Metric("samples_per_s", "higher"),
    Metric("step_time_s", "lower", unit="s"),
)
"""What every training report carries (:meth:`WorkerTrainer._window_metrics`); sweeps may optimize those with a
direction (:func:`asva_model.metrics.catalogue.mode`)."""
VALIDATION = Metric("val_loss", "lower")
"""Reported too when validation runs at every report step."""
AUDIO_GAP_METRICS: tuple[Metric, ...] = (
    Metric("val_loss_gap_t", "higher"),
    Metric("val_audio_win_rate", "higher"),
)
"""Reported with ``val_loss`` when the held-out windows come from two clips or more: the paired t of the loss
with another clip's audio minus the loss with the window's own, and the share of windows where the own is
lower (:func:`asva_model.objective.audio_loss_gap`). A train sweep may run ASHA on them."""
REPORTED_METRICS = tuple(m.name for m in TRAINING_METRICS)
VALIDATION_METRIC = VALIDATION.name


def placement_summary(placement: list[RankPlacement]) -> str:
    """``0:<node>,1:<node>`` with the first 8 characters of each node id (the ``asva.rank_nodes`` tag)."""
    return ",".join(f"{p.rank}:{p.node_id[:8]}" for p in placement)


def epoch_batches(state: TrainerState, train_batches: Callable[[int, int], Iterable[Any]]) -> Iterator[Any]:
    """This rank's batches from ``state``'s data position on, epoch after epoch, moving ``state.epoch`` and
    ``state.batches_in_epoch`` along (``train_batches(epoch, skip)`` is the source's; step and samples_seen
    are the caller's). A resumed epoch with no batch left rolls over to the next one: a checkpoint at an
    epoch's last batch, or a resume on more workers whose share of what is left of the epoch is under one
    batch each. Every rank gets the same count, so all roll over together. A fresh epoch with no batch
    means the data is too small."""
    while True:
        resumed_at = state.batches_in_epoch
        empty = True
        for batch in train_batches(state.epoch, resumed_at):
            empty = False
            state.batches_in_epoch += 1
            yield batch
        if empty and not resumed_at:
            raise RuntimeError(
                f"epoch {state.epoch} produced no batch: the training data has fewer "
                f"windows than num_workers x batch_size_per_worker"
            )
        if empty:
            log.info(
                "epoch %d has no batch left after %d; continuing with epoch %d",
                state.epoch,
                resumed_at,
                state.epoch + 1,
            )
        state.epoch += 1
        state.batches_in_epoch = 0


class Window:
    """Throughput and loss accumulators between two reports."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.wait = 0.0
        self.steps = 0
        self.micro = 0
        self.loss = 0.0

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)


class TrainContext(Protocol):
    """Where a :class:`WorkerTrainer` runs."""

    info: WorkerInfo
    """Its rank, the world size and its device."""

    def dataset_shard(self) -> Any:
        """Cached mode: this rank's shard of the cache's ``train`` split (``iter_torch_batches``)."""

    def checkpoint(self) -> contextlib.AbstractContextManager[tuple[str, str] | None]:
        """The checkpoint to resume from as ``(local folder, where it lives)`` inside the block, or None."""

    def placement(self) -> list[RankPlacement]:
        """Where every rank runs, in rank order (collective: every rank calls it)."""

    def report(
        self,
        metrics: dict[str, float],
        checkpoint_dir: str | None = None,
        dir_name: str = "",
        milestone_uri: str = "",
        storage: Storage | None = None,
        asynchronous: bool = True,
    ) -> None:
        """Report ``metrics`` (collective), with this rank's files of a checkpoint saved in ``checkpoint_dir``
        when given: stored as ``dir_name`` (copied to ``milestone_uri`` too when given), the folder removed."""


class RayTrainContext:
    """A Ray Train worker's context: the one place the trainer reads Ray Train's state."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.info = WorkerInfo(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())

    def dataset_shard(self) -> Any:
        import ray.train

        return ray.train.get_dataset_shard("train")

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[tuple[str, str] | None]:
        import ray.train

        found = ray.train.get_checkpoint()
        if found is None:
            yield None
            return
        with found.as_directory() as folder:
            yield folder, found.path

    def placement(self) -> list[RankPlacement]:
        import ray
        import torch.distributed as dist

        mine = RankPlacement(
            self.info.rank,
            ray.get_runtime_context().get_node_id(),
            ray.util.get_node_ip_address(),
            socket.gethostname(),
        )
        everyone: list = [None] * self.info.world
        dist.all_gather_object(everyone, mine)
        return everyone

    def report(
        self,
        metrics: dict[str, float],
        checkpoint_dir: str | None = None,
        dir_name: str = "",
        milestone_uri: str = "",
        storage: Storage | None = None,
        asynchronous: bool = True,
    ) -> None:
        import ray.train

        if checkpoint_dir is None:
            ray.train.report(metrics)
            return
        upload = None
        if milestone_uri:  # the milestone copy first, so a checkpoint is recorded only once it is whole too

            def upload(checkpoint, name: str):
                storage.upload_dir(checkpoint.path, milestone_uri)  # each rank its own files
                return ray.train.get_context().get_storage().persist_current_checkpoint(checkpoint, name)

        mode = ray.train.CheckpointUploadMode.ASYNC if asynchronous else ray.train.CheckpointUploadMode.SYNC
        # Ray deletes the folder once it is uploaded (after the call when sync, in its upload thread when async)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
            checkpoint_dir_name=dir_name,
            checkpoint_upload_mode=mode,
            delete_local_checkpoint_after_upload=True,
            checkpoint_upload_fn=upload,
        )


class LocalContext:
    """A trainer outside Ray: the rank and world size of this process's ``torch.distributed`` group (which the
    caller initialises, as DeepSpeed needs one), reports kept in :attr:`reports`, checkpoints moved to
    ``<checkpoint_root>/<dir_name>`` (removed when no root is given)."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        shard: Any = None,
        checkpoint_root: str | Path = "",
        resume_from: str | Path = "",
    ) -> None:
        import torch.distributed as dist

        self.info = WorkerInfo(dist.get_rank(), dist.get_world_size(), torch.device(device))
        self.shard, self.checkpoint_root, self.resume_from = shard, checkpoint_root, resume_from
        self.reports: list[dict[str, float]] = []

    def dataset_shard(self) -> Any:
        return self.shard

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[tuple[str, str] | None]:
        yield (str(self.resume_from), str(self.resume_from)) if self.resume_from else None

    def placement(self) -> list[RankPlacement]:
        return [RankPlacement(r, "local", "127.0.0.1", socket.gethostname()) for r in range(self.info.world)]

    def report(
        self,
        metrics: dict[str, float],
        checkpoint_dir: str | None = None,
        dir_name: str = "",
        milestone_uri: str = "",
        storage: Storage | None = None,
        asynchronous: bool = True,
    ) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is None:
            return
        if milestone_uri:
            storage.upload_dir(checkpoint_dir, milestone_uri)
        if self.checkpoint_root:
            shutil.copytree(checkpoint_dir, Path(self.checkpoint_root, dir_name), dirs_exist_ok=True)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


class WorkerTrainer:
    """One rank's training: the DeepSpeed engine, its data, validation, checkpoints and reports."""

    def __init__(self, spec: TrainerSpec, context: TrainContext, source: Any = None) -> None:
        """``source`` (default: the cache shard or raw clips, per ``train.data_mode``) gives the batches and turns
        them into loss inputs (:mod:`asva_platform.training.data`)."""
        self.t_start = time.perf_counter()
        self.spec, self.context, self.t = spec, context, spec.train
        self.info = context.info
        self.rank0 = self.info.rank == 0
        self.storage = Storage.from_config(spec.storage)
        self.model_cfg = localize_model_paths(spec.model, self.storage)

        torch.manual_seed(
            self.t.seed
        )  # identical initial weights on every rank (ZeRO-3 keeps each rank's slice)
        unet = build_unet(self.model_cfg)
        torch.manual_seed(self.t.seed + self.info.rank)
        self.engine = initialize_engine(unet, self.t, self.info.world)
        self.noise_scheduler = build_noise_scheduler(self.model_cfg)
        self.source = source if source is not None else self._make_source()
        self.validator = Validator(spec, self.model_cfg, self.source, self.info, self.storage)
        self.ema = TrainableEMA(self.engine.module, self.t.ema_decay, self.rank0) if self.t.ema else None
        self.logger = None
        self.placement = context.placement()
        self.state = TrainerState(
            mlflow_run_id=spec.run.mlflow_run_id,
            world_size=self.info.world,
            zero_stage=self.t.zero_stage,
            global_batch_size=self.t.global_batch_size,
            cache_id=spec.run.cache_id,
            data_mode=self.t.data_mode,
            ranks=self.placement,
        )
        self.on_gpu = self.info.device.type == "cuda"
        self.flops = None
        self.peak = 0.0
        self.held: dict[str, float] = {}
        """This rank's engine bytes at its first optimizer step (``rank_*_bytes``), reported with every window."""
        self.resumed: dict[str, float] = {}
        """Seconds the resume took (download, then load with any reshard), reported with every window."""
        if self.on_gpu or self.t.peak_tflops:
            self.flops = flops_mod.training_flops_per_sample(spec.model, spec.sampling).per_sample
            name = torch.cuda.get_device_name(self.info.device) if self.on_gpu else "cpu"
            self.peak = flops_mod.peak_flops(name, self.t.precision, self.t.peak_tflops)

    def _make_source(self):
        if self.t.data_mode == "online":
            return OnlineSource(self.spec, self.storage, self.info, self.model_cfg)
        handle = open_cache(self.storage, self.spec.run.cache_uri, self.spec.storage.cache_root)
        return CachedSource(self.spec, handle, self.info, self.context.dataset_shard())

    # -- resume --------------------------------------------------------------------------------
    def restore(self) -> None:
        t0 = time.perf_counter()
        with self.context.checkpoint() as found:
            if found is None:
                return
            folder, where = found
            t_load = time.perf_counter()
            state = load_engine(self.engine, folder, self.info.world, self.t.zero_stage)
            if self.ema is not None:
                self.ema.load(folder)
            self.resumed = {"resume_download_s": t_load - t0, "resume_load_s": time.perf_counter() - t_load}
        checksum = trainable_checksum(self.engine.module, self.rank0)
        if self.rank0 and state.param_checksum and checksum != state.param_checksum:
            raise RuntimeError(f"checkpoint {where}: weights after loading do not match the saved checksum")
        saved_world = state.world_size
        state.batches_in_epoch = resharded_position(state.batches_in_epoch, saved_world, self.info.world)
        state.world_size, state.zero_stage = self.info.world, self.t.zero_stage
        state.global_batch_size = self.t.global_batch_size
        state.ranks = self.placement  # where the ranks run now
        # the driver found the run by its tag; the id in the checkpoint is kept in the resume record
        state.resumes.append(
            Resume(state.step, checksum, where, state.mlflow_run_id, (saved_world, self.info.world))
        )
        state.mlflow_run_id = self.spec.run.mlflow_run_id
        self.state = state
        if self.rank0:
            moved = (
                f", resharded from {saved_world} to {self.info.world} workers"
                if saved_world != self.info.world
                else ""
            )
            console(
                f"resumed from {where} at step {state.step} (epoch {state.epoch}, "
                f"{state.batches_in_epoch} batches into it{moved})"
            )

    # -- reporting -----------------------------------------------------------------------------
    def _window_metrics(self, w: Window) -> dict[str, float]:
        loss_sum, micro, wait = reduce_values(
            [w.loss, float(w.micro), w.wait / w.elapsed()], self.info.device
        )
        t = self.t
        samples_per_s = w.steps * t.global_batch_size / w.elapsed()
        m = {
            "step": float(self.state.step),
            "epoch": float(self.state.epoch),
            "loss": loss_sum / micro if micro else math.nan,
            "lr": float(self.engine.get_lr()[0]),
            "samples_per_s": samples_per_s,
            "frames_per_s": samples_per_s * self.spec.sampling.num_frames,
            "step_time_s": w.elapsed() / max(w.steps, 1),
            "data_wait_frac": wait / self.info.world,
        }
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            m["grad_norm"] = float(norm)
        if self.on_gpu:
            m["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.info.device) / 1e9
            torch.cuda.reset_peak_memory_stats(self.info.device)
        else:
            import psutil

            m["rss_gb"] = psutil.Process().memory_info().rss / 1e9
        if self.flops and self.peak:
            m["mfu"] = flops_mod.mfu(self.flops, samples_per_s / self.info.world, self.peak)
        (peak_rss,) = reduce_values(
            [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0], self.info.device, "max"
        )
        m["rank_peak_rss_gb"] = peak_rss / 1e9  # the largest of any rank, since it started
        return {**m, **self.held, **self.resumed}

    def _validate(self, metrics: dict[str, float], with_samples: bool = True) -> None:
        val = self.validator.loss(self.engine, self.noise_scheduler)
        gap = self.validator.audio_gap(self.engine, self.noise_scheduler)
        samples = self.validator.samples(self.engine) if with_samples else []
        val_metrics: dict[str, float] = {}
        if val is not None:
            val_metrics["val_loss"] = val
        if gap is not None:
            val_metrics.update(
                val_loss_true=gap.loss_true,
                val_loss_other_audio=gap.loss_other_audio,
                val_loss_null_audio=gap.loss_null_audio,
                val_loss_gap_t=gap.gap_t,
                val_audio_win_rate=gap.win_rate,
            )
        metrics.update(val_metrics)
        if self.logger is not None and self.logger.should_log("val", self.state.step):
            if samples:
                val_metrics["val_samples"] = float(
                    self.validator.log_samples(self.logger, self.state.step, samples)
                )
            self.logger.log("val", self.state.step, val_metrics)

    def _save(self, directory: str) -> None:
        self.state.param_checksum = trainable_checksum(self.engine.module, self.rank0)
        save_engine(self.engine, directory, self.state, self.rank0)
        if self.ema is not None:
            self.ema.save(directory)

    def _milestone_uri(self, step: int) -> str:
        """Where a milestone copy of ``step``'s checkpoint goes ('' when ``step`` is not a milestone)."""
        t = self.t
        if not (t.milestone_every and step % t.milestone_every == 0):
            return ""
        return join(self.spec.run.run_uri, "milestones", checkpoint_dir_name(step))

    def _report(self, metrics: dict[str, float], with_checkpoint: bool) -> None:
        if self.logger is not None:  # step is MLflow's x-axis; val_* went to the "val" group already
            self.logger.log(
                "train",
                self.state.step,
                {k: v for k, v in metrics.items() if k != "step" and not k.startswith("val_")},
            )
        if self.rank0:  # the console's view (Ray forwards it to the driver)
            console(
                progress_line(
                    "step",
                    self.state.step,
                    self.t.max_steps,
                    metrics["step_time_s"],
                    f"{metrics['samples_per_s']:.3g} samples/s",
                    loss=metrics["loss"],
                )
            )
        if not with_checkpoint:
            self.context.report(metrics)
            return
        t0 = time.perf_counter()
        directory = tempfile.mkdtemp(prefix="asva-ckpt-")
        self.state.last_metrics = metrics
        try:
            self._save(directory)
        except BaseException:  # the context never saw the folder, so nothing else would remove it
            shutil.rmtree(directory, ignore_errors=True)
            raise
        saved_s = time.perf_counter() - t0
        step = self.state.step
        self.context.report(
            metrics,
            directory,
            checkpoint_dir_name(step),
            self._milestone_uri(step),
            self.storage,
            asynchronous=self.t.checkpoint_upload == "async",
        )
        if self.logger is not None:  # what training waited for: the local save, plus the upload when sync
            self.logger.log(
                "checkpoint",
                self.state.step,
                {"checkpoint_save_s": saved_s, "checkpoint_stall_s": time.perf_counter() - t0},
            )

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> None:
        self.restore()
        if self.rank0:
            self.logger = StepLogger(self.spec.run.tracking_uri, self.state.mlflow_run_id)
            self.logger.set_tag(TAG_RANK_NODES, placement_summary(self.placement))
            self.logger.set_tag(TAG_WORLD_SIZE, str(self.info.world))  # an elastic run's current size
            console(
                f"worker setup {time.perf_counter() - self.t_start:.1f}s (engine, data, restore); training from "
                f"step {self.state.step} to {self.t.max_steps}"
            )
        t = self.t
        if self.state.step >= t.max_steps:  # re-run of a finished run: nothing to train
            self.context.report({**self.state.last_metrics, "step": float(self.state.step)})
            return
        if self.state.step == 0 and t.validate_every > 0:
            self._validate({}, with_samples=False)  # the untrained baseline of the held-out loss, at step 0
        self.engine.train()
        window = Window()
        batches = epoch_batches(self.state, self.source.train_batches)
        with contextlib.ExitStack() as measuring:
            first_step = measuring.enter_context(at_optimizer_step(self.engine))
            self._train(batches, window, first_step, measuring)

    def _train(self, batches, window: Window, first_step: list, measuring: contextlib.ExitStack) -> None:
        t, ga, micro = self.t, self.t.gradient_accumulation_steps, 0
        while self.state.step < t.max_steps:
            t_wait = time.perf_counter()
            batch = next(batches)
            window.wait += time.perf_counter() - t_wait
            loss = self.micro_step(batch, micro)
            if first_step and not self.held:  # what this rank holds where model states peak, once
                held = first_step[0]
                self.held = {
                    f"rank_{kind}_bytes": float(getattr(held, kind))
                    for kind in ("params", "grads", "optimizer", "buffers")
                }
                measuring.close()
            window.loss += loss
            window.micro += 1
            micro = (micro + 1) % ga
            if self.engine.global_steps == self.state.step:
                continue  # still accumulating
            self.state.step = self.engine.global_steps
            self.state.samples_seen += t.global_batch_size
            window.steps += 1
            if self.ema is not None and self.state.step % t.ema_update_every == 0:
                self.ema.update()
            self._maybe_report(window)

    def micro_step(self, batch: Any, micro: int = 0) -> float:
        """One micro-batch: loss, backward, and DeepSpeed's step (the optimizer steps on the last micro-batch of
        an accumulation). Its noise is drawn from (seed, rank, step, micro), so a resume redraws the same."""
        gen = seeded_generator(self.t.seed, self.info.rank, self.state.step, micro)
        inputs = self.source.to_inputs(batch, gen)
        loss = loss_from_inputs(
            self.engine, self.noise_scheduler, inputs, self.spec.model.audio_cond_drop_prob, gen
        )
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.detach())

    def _maybe_report(self, window: Window) -> None:
        t, step = self.t, self.state.step
        last = step >= t.max_steps
        checkpoint = last or step % t.checkpoint_every == 0
        validate = t.validate_every > 0 and (last or step % t.validate_every == 0)
        if not (checkpoint or validate or step % t.log_every == 0):
            return
        metrics = self._window_metrics(window)
        if validate:
            self._validate(metrics)
        self._report(metrics, checkpoint)
        window.reset()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config = {"spec": <TrainerSpec as plain data>}`` (:func:`loop_config`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_ray_report_log()
    context = RayTrainContext()
    spec = cfgmod.from_dict(TrainerSpec, config["spec"], "train_loop_config").on_world(context.info.world)
    WorkerTrainer(spec, context).fit()


def loop_config(spec: TrainerSpec) -> dict[str, Any]:
    """The ``train_loop_config`` for :func:`train_loop_per_worker` (plain data, picklable)."""
    return {"spec": cfgmod.to_dict(spec)}
