"""``train_loop_per_worker``: what every Ray Train worker runs (DeepSpeed engine, data, checkpoints, logging).

One optimizer step = ``gradient_accumulation_steps`` micro-batches per rank. Every ``log_every`` steps all
ranks report (a barrier) with metrics averaged over ranks; every ``checkpoint_every`` steps and at the end
they save their shards and report them as one checkpoint; rank 0 alone writes MLflow.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from asva_model.build import build_noise_scheduler, build_unet
from asva_model.objective import loss_from_inputs
from asva_platform import config as cfgmod
from asva_platform.artifacts.cache import open_cache
from asva_platform.artifacts.weights import localize_model_paths
from asva_platform.experiment import ExperimentConfig
from asva_platform.progress import console, progress_line
from asva_platform.storage import Storage, join
from asva_platform.tracking import TAG_RANK_NODES, TAG_WORLD_SIZE
from asva_platform.training import flops as flops_mod
from asva_platform.training.checkpoint import (
    TrainerState,
    load_engine,
    resharded_position,
    save_engine,
    trainable_checksum,
)
from asva_platform.training.data import CachedSource, OnlineSource, WorkerInfo, seeded_generator
from asva_platform.training.deepspeed_setup import initialize_engine
from asva_platform.training.ema import TrainableEMA
from asva_platform.training.run_tracking import StepLogger
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

REPORTED_METRICS = ("step", "epoch", "loss", "lr", "samples_per_s", "step_time_s")
"""What every training report carries (:meth:`WorkerTrainer._window_metrics`); sweeps may optimize any of them."""
VALIDATION_METRIC = "val_loss"
"""Reported too when validation runs at every report step."""
LOWER_IS_BETTER = ("loss", VALIDATION_METRIC, "step_time_s")
HIGHER_IS_BETTER = ("samples_per_s",)



@dataclass
class RunSpec:
    """What the driver hands every worker besides the experiment config."""

    tracking_uri: str
    """MLflow server (rank 0 logs there)."""
    mlflow_run_id: str
    """The run to log into (found by the driver; the same run on every resume)."""
    run_uri: str
    """``<storage>/<name>``: milestone checkpoints go under ``<run_uri>/milestones``."""
    cache_uri: str = ""
    """Cached mode: the latent cache's URI."""
    cache_id: str = ""
    """Cached mode: its id (recorded in checkpoints)."""


def rank_placement(rank: int, world: int) -> list[dict]:
    """Where every rank runs (``[{rank, node_id, node_ip, host}]`` in rank order), gathered on every rank:
    the run record of a multi-node training."""
    import ray
    import torch.distributed as dist

    mine = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


def placement_summary(placement: list[dict]) -> str:
    """``0:<node>,1:<node>`` with the first 8 characters of each node id (the ``asva.rank_nodes`` tag)."""
    return ",".join(f"{p['rank']}:{p['node_id'][:8]}" for p in placement)


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


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
            raise RuntimeError(f"epoch {state.epoch} produced no batch: the training data has fewer "
                               f"windows than num_workers x batch_size_per_worker")
        if empty:
            log.info("epoch %d has no batch left after %d; continuing with epoch %d", state.epoch, resumed_at,
                     state.epoch + 1)
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


class WorkerTrainer:
    def __init__(self, exp: ExperimentConfig, spec: RunSpec) -> None:
        import ray.train
        import ray.train.torch


        self.t_start = time.perf_counter()
        self.exp, self.spec, self.t = exp, spec, exp.train
        ctx = ray.train.get_context()
        self.info = WorkerInfo(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
        self.rank0 = self.info.rank == 0
        self.storage = Storage.from_config(exp.storage)
        self.model_cfg = localize_model_paths(exp.model, self.storage)

        torch.manual_seed(self.t.seed)  # identical initial weights on every rank (ZeRO-3 keeps each rank's slice)
        unet = build_unet(self.model_cfg)
        torch.manual_seed(self.t.seed + self.info.rank)
        self.engine = initialize_engine(unet, self.t, self.info.world)
        self.noise_scheduler = build_noise_scheduler(self.model_cfg)
        self.source = self._make_source()
        self.validator = Validator(exp, self.model_cfg, self.source, self.info, self.storage)
        self.ema = None
        if self.t.ema:

            self.ema = TrainableEMA(self.engine.module, self.t.ema_decay, self.rank0)
        self.logger = None
        self.placement = rank_placement(self.info.rank, self.info.world)
        self.state = TrainerState(mlflow_run_id=spec.mlflow_run_id, world_size=self.info.world,
                                  zero_stage=self.t.zero_stage, global_batch_size=self.t.global_batch_size,
                                  extra={"cache_id": spec.cache_id, "data_mode": self.t.data_mode, "resumes": [],
                                         "ranks": self.placement})
        self.on_gpu = self.info.device.type == "cuda"
        self.flops = None
        self.peak = 0.0
        if self.on_gpu or self.t.peak_tflops:
            self.flops = flops_mod.training_flops_per_sample(exp.model, exp.sampling).per_sample
            name = torch.cuda.get_device_name(self.info.device) if self.on_gpu else "cpu"
            self.peak = flops_mod.peak_flops(name, self.t.precision, self.t.peak_tflops)

    def _make_source(self):
        if self.t.data_mode == "online":
            return OnlineSource(self.exp, self.storage, self.info, self.model_cfg)
        import ray.train


        handle = open_cache(self.storage, self.spec.cache_uri, self.exp.storage.cache_root)
        return CachedSource(self.exp, handle, self.info, ray.train.get_dataset_shard("train"))

    # -- resume --------------------------------------------------------------------------------
    def restore(self) -> None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return
        with ckpt.as_directory() as d:
            state = load_engine(self.engine, d, self.info.world, self.t.zero_stage)
            if self.ema is not None:
                self.ema.load(d)
        checksum = trainable_checksum(self.engine.module, self.rank0)
        if self.rank0 and state.param_checksum and checksum != state.param_checksum:
            raise RuntimeError(f"checkpoint {ckpt.path}: weights after loading do not match the saved checksum")
        saved_world = state.world_size
        state.batches_in_epoch = resharded_position(state.batches_in_epoch, saved_world, self.info.world)
        state.world_size, state.zero_stage = self.info.world, self.t.zero_stage
        state.global_batch_size = self.t.global_batch_size
        state.extra["ranks"] = self.placement  # where the ranks run now
        # the driver found the run by its tag; the id in the checkpoint is kept in the resume record
        state.extra.setdefault("resumes", []).append({"step": state.step, "checksum": checksum, "from": ckpt.path,
                                                      "mlflow_run_id": state.mlflow_run_id,
                                                      "world_size": [saved_world, self.info.world]})
        state.mlflow_run_id = self.spec.mlflow_run_id
        self.state = state
        if self.rank0:
            moved = f", resharded from {saved_world} to {self.info.world} workers" if saved_world != self.info.world else ""
            console(f"resumed from {ckpt.path} at step {state.step} (epoch {state.epoch}, "
                    f"{state.batches_in_epoch} batches into it{moved})")

    # -- reporting -----------------------------------------------------------------------------
    def _window_metrics(self, w: Window) -> dict[str, float]:
        loss_sum, micro, wait = reduce_values([w.loss, float(w.micro), w.wait / w.elapsed()], self.info.device)
        t = self.t
        samples_per_s = w.steps * t.global_batch_size / w.elapsed()
        m = {
            "step": float(self.state.step),
            "epoch": float(self.state.epoch),
            "loss": loss_sum / micro if micro else math.nan,
            "lr": float(self.engine.get_lr()[0]),
            "samples_per_s": samples_per_s,
            "frames_per_s": samples_per_s * self.exp.sampling.num_frames,
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
        return m

    def _validate(self, metrics: dict[str, float], with_samples: bool = True) -> None:
        val = self.validator.loss(self.engine, self.noise_scheduler)
        gap = self.validator.audio_gap(self.engine, self.noise_scheduler)
        samples = self.validator.samples(self.engine) if with_samples else []
        val_metrics: dict[str, float] = {}
        if val is not None:
            val_metrics["val_loss"] = val
        if gap is not None:
            val_metrics.update(val_loss_true=gap.loss_true, val_loss_other_audio=gap.loss_other_audio,
                               val_loss_null_audio=gap.loss_null_audio, val_loss_gap_t=gap.gap_t,
                               val_audio_win_rate=gap.win_rate)
        metrics.update(val_metrics)
        if self.logger is not None and self.logger.should_log("val", self.state.step):
            if samples:
                val_metrics["val_samples"] = float(self.validator.log_samples(self.logger, self.state.step, samples))
            self.logger.log("val", self.state.step, val_metrics)

    def _save(self, directory: str) -> None:
        self.state.param_checksum = trainable_checksum(self.engine.module, self.rank0)
        save_engine(self.engine, directory, self.state, self.rank0)
        if self.ema is not None:
            self.ema.save(directory)

    def _upload_fn(self, step: int):
        """Ray's upload of this rank's files, preceded by the milestone copy when ``step`` is one (so a
        checkpoint is recorded only after its milestone is whole too); None = Ray's own upload alone."""
        t = self.t
        if not (t.milestone_every and step % t.milestone_every == 0):
            return None
        milestone = join(self.spec.run_uri, "milestones", checkpoint_dir_name(step))

        def upload(checkpoint, dir_name: str):
            import ray.train

            self.storage.upload_dir(checkpoint.path, milestone)  # each rank its own files
            return ray.train.get_context().get_storage().persist_current_checkpoint(checkpoint, dir_name)

        return upload

    def _report(self, metrics: dict[str, float], with_checkpoint: bool) -> None:
        import ray.train

        if self.logger is not None:  # step is MLflow's x-axis; val_* went to the "val" group already
            self.logger.log("train", self.state.step,
                            {k: v for k, v in metrics.items() if k != "step" and not k.startswith("val_")})
        if self.rank0:  # the console's view (Ray forwards it to the driver)
            console(progress_line("step", self.state.step, self.t.max_steps, metrics["step_time_s"],
                                  f"{metrics['samples_per_s']:.3g} samples/s", loss=metrics["loss"]))
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        t0 = time.perf_counter()
        # Ray deletes the folder once it is uploaded (after the call when sync, in its upload thread when async)
        directory = tempfile.mkdtemp(prefix="asva-ckpt-")
        self.state.extra["last_metrics"] = metrics
        try:
            self._save(directory)
        except BaseException:  # Ray never saw the folder, so nothing else would remove it
            shutil.rmtree(directory, ignore_errors=True)
            raise
        mode = ray.train.CheckpointUploadMode.ASYNC if self.t.checkpoint_upload == "async" else \
            ray.train.CheckpointUploadMode.SYNC
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                         checkpoint_dir_name=checkpoint_dir_name(self.state.step), checkpoint_upload_mode=mode,
                         delete_local_checkpoint_after_upload=True, checkpoint_upload_fn=self._upload_fn(self.state.step))
        if self.logger is not None:  # what training waited for: the local save, plus the upload when sync
            self.logger.log("checkpoint", self.state.step, {"checkpoint_stall_s": time.perf_counter() - t0})

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> None:
        self.restore()
        if self.rank0:

            self.logger = StepLogger(self.spec.tracking_uri, self.state.mlflow_run_id)
            self.logger.set_tag(TAG_RANK_NODES, placement_summary(self.placement))
            self.logger.set_tag(TAG_WORLD_SIZE, str(self.info.world))  # an elastic run's current size
            console(f"worker setup {time.perf_counter() - self.t_start:.1f}s (engine, data, restore); training from "
                    f"step {self.state.step} to {self.t.max_steps}")
        t = self.t
        if self.state.step >= t.max_steps:  # re-run of a finished run: nothing to train
            import ray.train

            ray.train.report({**self.state.extra.get("last_metrics", {}), "step": float(self.state.step)})
            return
        if self.state.step == 0 and t.validate_every > 0:
            self._validate({}, with_samples=False)  # the untrained baseline of the held-out loss, at step 0
        self.engine.train()
        window = Window()
        ga = t.gradient_accumulation_steps
        micro = 0
        batches = epoch_batches(self.state, self.source.train_batches)
        while self.state.step < t.max_steps:
            t_wait = time.perf_counter()
            batch = next(batches)
            window.wait += time.perf_counter() - t_wait
            gen = seeded_generator(t.seed, self.info.rank, self.state.step, micro)
            loss = self._micro_step(batch, gen)
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

    def _micro_step(self, batch: Any, gen: torch.Generator) -> float:

        inputs = self.source.to_inputs(batch, gen)
        loss = loss_from_inputs(self.engine, self.noise_scheduler, inputs, self.exp.model.audio_cond_drop_prob, gen)
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


def on_world(exp: ExperimentConfig, world: int) -> ExperimentConfig:
    """``exp`` for a worker group of ``world`` workers: an elastic run that Ray Train started on fewer than
    ``train.num_workers`` accumulates more micro-batches per step, so the global batch stays the same."""
    t = exp.train
    if world == t.num_workers:
        return exp
    accumulation = t.accumulation_for(world)
    if accumulation is None:  # the config check rules this out for every count an elastic run may get
        raise ValueError(f"{world} workers cannot keep the global batch of {t.global_batch_size} clips")
    return cfgmod.replace_dotted(exp, {"train.num_workers": world, "train.min_workers": min(t.min_workers, world),
                                       "train.gradient_accumulation_steps": accumulation})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config = {"experiment": <config dict>, "run": <RunSpec fields>}``."""
    import ray.train

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_ray_report_log()
    exp = cfgmod.from_dict(ExperimentConfig, config["experiment"], "train_loop_config")
    exp = on_world(exp, ray.train.get_context().get_world_size())
    spec = RunSpec(**config["run"])
    WorkerTrainer(exp, spec).fit()


def loop_config(exp: ExperimentConfig, spec: RunSpec) -> dict[str, Any]:
    """The ``train_loop_config`` for :func:`train_loop_per_worker` (plain data, picklable)."""
    return {"experiment": cfgmod.to_dict(exp), "run": dataclasses.asdict(spec)}
