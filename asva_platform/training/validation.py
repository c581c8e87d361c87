"""Periodic validation on every rank: held-out loss with fixed noise, and a few generated sample videos.

Both run on all ranks in lockstep because under ZeRO-3 every forward pass gathers weight partitions
from all ranks; rank 0 alone writes and logs the mp4s (frames + the clip's audio).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from asva_model.build import build_inference_scheduler
from asva_model.config import ModelConfig
from asva_model.objective import AudioLossGap, LossInputs, audio_loss_gap, loss_from_inputs, other_clip_index
from asva_model.pipeline import AVSyncPipeline
from asva_model.video_io import frame_strip, write_video
from asva_platform.datasets import dataset_access
from asva_platform.inference.weights import load_frozen_encoders
from asva_platform.storage import Storage
from asva_platform.training.data import WorkerInfo, held_out_clips, seeded_generator
from asva_platform.training.spec import TrainerSpec

log = logging.getLogger(__name__)
VAL_SEED_OFFSET = 1_000_003  # keeps validation noise disjoint from training noise
GAP_STREAM = (
    999_983  # in place of a rank (no rank has this id): audio-gap latents are drawn alike on every rank
)


def reduce_values(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Element-wise sum (or min, or max) over ranks, on the backend's device (CPU for gloo, GPU for NCCL)."""
    t = torch.tensor(values, dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    dist.all_reduce(t, op=ops[op])
    return t.tolist()


class Validator:
    def __init__(
        self, spec: TrainerSpec, model_cfg: ModelConfig, source: Any, info: WorkerInfo, storage: Storage
    ) -> None:
        self.spec = spec
        self.model_cfg = model_cfg  # the model section with weight paths made local
        self.source = source
        self.info = info
        self.storage = storage
        self._batches: list[dict] | None = None
        self._gap = None
        self._clips = None
        self._encoders = None

    # -- held-out loss ------------------------------------------------------------------------
    def _val_batches(self) -> list[dict]:
        """This rank's validation batches; every rank gets the same count and sizes (ZeRO-3 forwards are
        collective), so all ranks keep as many items as the rank with the fewest."""
        items = self.source.val_items()
        n = int(reduce_values([float(len(items))], self.info.device, op="min")[0])
        items = items[:n]
        bs = self.spec.train.batch_size_per_worker
        return [self.source.val_batch(items[i : i + bs]) for i in range(0, n, bs)]

    @torch.no_grad()
    def loss(self, engine, scheduler) -> float | None:
        """Mean loss over the held-out windows (conditional: no audio dropout), identical noise each time."""
        if self._batches is None:
            self._batches = self._val_batches()
        module = engine.module
        was_training = module.training
        module.eval()
        total = count = 0.0
        try:
            for i, batch in enumerate(self._batches):
                gen = seeded_generator(self.spec.train.seed, VAL_SEED_OFFSET, self.info.rank, i)
                inputs = self.source.val_inputs(batch, gen)
                loss = loss_from_inputs(module, scheduler, inputs, 0.0, gen)
                n = inputs.latents.shape[0]
                total += float(loss) * n
                count += n
        finally:
            module.train(was_training)
        total, count = reduce_values([total, count], self.info.device)
        return total / count if count else None

    # -- does the model use its audio? ---------------------------------------------------------
    def _gap_inputs(self) -> tuple[LossInputs, torch.Tensor] | None:
        """Every held-out window (the same on every rank: forwards stay in lockstep under ZeRO-3) with fixed
        latent noise, and for each the index of a window of another clip; None with fewer than 2 clips."""
        if self._gap is None:
            items = self.source.val_items(share=False)
            n = int(reduce_values([float(len(items))], self.info.device, op="min")[0])
            items = items[:n]
            other = other_clip_index([it["clip"] if isinstance(it, dict) else it.name for it in items])
            if other is None:
                self._gap = False
            else:
                bs = self.spec.train.batch_size_per_worker
                parts = [
                    self.source.val_inputs(
                        self.source.val_batch(items[i : i + bs]),
                        seeded_generator(self.spec.train.seed, VAL_SEED_OFFSET, GAP_STREAM, i),
                    )
                    for i in range(0, n, bs)
                ]
                self._gap = (LossInputs.concat(parts), other)
        return self._gap or None

    def audio_gap(self, engine, scheduler) -> AudioLossGap | None:
        """Held-out loss with each window's own audio, another clip's and the null audio (same noise and
        timesteps): the training-time evidence that the model animates from its audio."""
        data = self._gap_inputs()
        if data is None:
            return None
        inputs, other = data
        return audio_loss_gap(
            engine.module,
            scheduler,
            inputs,
            other,
            seed=self.spec.train.seed,
            batch_size=self.spec.train.batch_size_per_worker,
        )

    # -- sample videos -------------------------------------------------------------------------
    def _prepare_samples(self) -> bool:
        """Decode the sample clips and load the frozen encoders once; every rank must agree they exist."""
        if self._clips is None:
            try:
                root, fs = dataset_access(self.spec.dataset, self.storage)
                self._clips = held_out_clips(
                    self.spec.sampling, self.spec.dataset, root, fs, self.spec.train.num_samples
                )
                vae = getattr(self.source, "vae", None)
                audio = getattr(self.source, "audio_encoder", None)
                if vae is None or audio is None:
                    vae, audio = load_frozen_encoders(self.model_cfg, self.info.device)
                self._encoders = (vae, audio)
            except Exception as err:  # samples are a diagnostic: never lose a training run over them
                log.warning("sample videos disabled: %s: %s", type(err).__name__, err)
                self._clips = []
        ok = reduce_values([1.0 if self._clips else 0.0], self.info.device)[0]
        return ok == self.info.world

    @torch.no_grad()
    def samples(self, engine) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """[(name, frames (f, 3, H, W) in [0, 1], waveform)] generated from each clip's first frame + audio."""
        if self.spec.train.num_samples == 0 or not self._prepare_samples():
            return []

        g, s = self.spec.generate, self.spec.sampling
        vae, audio = self._encoders
        module = engine.module
        was_training = module.training
        module.eval()
        try:
            pipe = AVSyncPipeline(module, vae, audio, build_inference_scheduler(self.model_cfg))
            clips = self._clips
            image = torch.stack([torch.from_numpy(c.frames[:, 0]) for c in clips])
            mel = torch.stack([torch.from_numpy(c.mel) for c in clips])
            text = torch.stack([self.source.text_for(c.class_dir, c.prompt) for c in clips])
            gen = torch.Generator(device="cpu").manual_seed(g.seed)
            out = pipe(
                image,
                text,
                mel,
                num_frames=s.num_frames,
                num_inference_steps=g.num_inference_steps,
                audio_guidance_scale=g.audio_guidance_scale,
                generator=gen,
                sampler=g.sampler,
            )
        finally:
            module.train(was_training)
        return [
            (f"{i:02d}_{c.class_dir}", out.frames[i], torch.from_numpy(c.waveform))
            for i, c in enumerate(clips)
        ]

    def log_samples(self, logger, step: int, samples) -> int:
        """Rank 0: write each sample as mp4 (with audio) under ``samples/step_XXXXXXXX/``, and its first,
        middle and last frames as the image ``samples/<clip>`` at ``step`` (the UI's step slider)."""

        s = self.spec.sampling
        with tempfile.TemporaryDirectory() as tmp:
            for name, frames, waveform in samples:
                path = write_video(
                    Path(tmp) / f"{name}.mp4", frames, waveform, fps=s.fps, sample_rate=s.audio_sample_rate
                )
                logger.log_artifact(str(path), f"samples/step_{step:08d}")
                logger.log_image(frame_strip(frames), f"samples/{name}", step)
        return len(samples)
