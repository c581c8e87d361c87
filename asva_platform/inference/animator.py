"""A loaded checkpoint as an inference pipeline, shared by the evaluation and generation stages: load AVSyncD
once, animate first frames.

:class:`Animator` holds the pipeline (the checkpoint's UNet + frozen VAE and audio encoder + PNDM), the
class-prompt encodings and the ``generate`` section (steps, guidance scales, seed, sampler; the audio encoder
saved with the checkpoint or ImageBind's own, as ``generate.audio_encoder_source`` says). Every clip is
generated from a fresh generator seeded with ``generate.seed``, so a clip's frames do not depend on which
worker made it or what it made before. Outputs are mp4 files at the sampling frame rate (6 fps, H.264) with the window's
audio (AAC at 16 kHz).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from asva_model.build import build_inference_scheduler
from asva_model.config import ModelConfig
from asva_model.data.config import SamplingConfig
from asva_model.pipeline import AVSyncPipeline
from asva_model.text import TextEncodings, load_null_text_encoding, load_text_encodings
from asva_model.video_io import write_video
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.artifacts.provenance import file_sha256, state_sha256
from asva_platform.errors import UserError
from asva_platform.inference.checkpoints import load_trained_unet, saved_audio_encoder
from asva_platform.inference.config import GenerateConfig
from asva_platform.inference.weights import load_frozen_encoders, localize_model_paths
from asva_platform.storage import Storage, StorageConfig


def pick_device(setting: str) -> str:
    """``cuda`` or ``cpu`` for a device setting (``eval.device``) (``auto``: cuda when this process sees a GPU)."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise UserError("eval.device=cuda but no GPU is visible to this process")
    return "cuda" if setting == "cuda" or (setting == "auto" and available) else "cpu"


@dataclass
class Animator:
    """AVSyncD inference with a ``generate`` section's settings, at a ``sampling`` section's geometry."""

    pipe: AVSyncPipeline
    text: TextEncodings
    """Class prompt encodings by class folder."""
    null_text: torch.Tensor | None
    """The empty prompt's encoding (only with text guidance)."""
    generate: GenerateConfig
    sampling: SamplingConfig
    device: str
    provenance: dict[str, str] = dataclasses.field(default_factory=dict)
    """sha256 of what was loaded: ``net.unet`` / ``net.vae`` / ``net.audio_encoder`` (their tensors) and
    ``text_encodings`` (the file); :mod:`asva_platform.artifacts.provenance`."""

    @classmethod
    def load(
        cls,
        model_cfg: ModelConfig,
        sampling: SamplingConfig,
        generate: GenerateConfig,
        checkpoint: ResolvedCheckpoint,
        storage: Storage,
        device: str = "cpu",
        scratch: str | Path | None = None,
    ) -> Animator:
        scratch = scratch or tempfile.mkdtemp(prefix="asva-model-")
        model_cfg = localize_model_paths(model_cfg, storage, str(scratch))
        saved_encoder = saved_audio_encoder(checkpoint, storage)
        if saved_encoder and generate.audio_encoder_source == "checkpoint":
            local = storage.localize(saved_encoder, scratch)
            model_cfg = dataclasses.replace(model_cfg, audio_encoder_weights=str(local))
        if not model_cfg.text_encodings:
            raise UserError(
                "model.text_encodings: required (AVSyncD is conditioned on the class prompt's encoding)"
            )
        width = model_cfg.unet.cross_attention_dim
        try:
            text = load_text_encodings(model_cfg.text_encodings, width)
            null_text = None
            if generate.text_guidance_scale != 1.0:
                if not model_cfg.null_text_encoding:
                    raise UserError("generate.text_guidance_scale != 1 needs model.null_text_encoding")
                null_text = load_null_text_encoding(model_cfg.null_text_encoding, width)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"model: {err}") from None
        unet = load_trained_unet(model_cfg, checkpoint, storage, device)
        vae, audio = load_frozen_encoders(model_cfg, device)
        pipe = AVSyncPipeline(unet, vae, audio, build_inference_scheduler(model_cfg))
        provenance = {
            "net.unet": state_sha256(unet),
            "net.vae": state_sha256(vae),
            "net.audio_encoder": state_sha256(audio),
            "text_encodings": file_sha256(model_cfg.text_encodings),
        }
        return cls(pipe, text, null_text, generate, sampling, device, provenance)

    def prompt_encoding(self, prompt: str) -> torch.Tensor:
        try:
            return self.text.lookup([prompt])
        except KeyError as err:
            raise UserError(str(err.args[0])) from None

    @torch.no_grad()
    def animate(self, image, mel, prompt: str) -> torch.Tensor:
        """``image`` (3, H, W) in [0, 1], ``mel`` (1, bins, frames) normalised log-mel of the 2 s window ->
        (num_frames, 3, H, W) float in [0, 1]; frame 0 is the decoded condition."""
        g, s = self.generate, self.sampling
        image = torch.as_tensor(image, dtype=torch.float32)[None]
        mel = torch.as_tensor(mel, dtype=torch.float32)[None]
        out = self.pipe(
            image,
            self.prompt_encoding(prompt),
            mel,
            num_frames=s.num_frames,
            num_inference_steps=g.num_inference_steps,
            audio_guidance_scale=g.audio_guidance_scale,
            text_guidance_scale=g.text_guidance_scale,
            null_text_emb=self.null_text,
            generator=torch.Generator().manual_seed(g.seed),
            sampler=g.sampler,
        )
        return out.frames[0]

    def write(self, path: str | Path, frames, waveform) -> Path:
        """An mp4 at the sampling frame rate with ``waveform`` (mono, sampling rate) as its AAC track."""
        s = self.sampling
        return write_video(path, frames, waveform, fps=s.fps, sample_rate=s.audio_sample_rate)


class AnimatorSpec(Protocol):
    """What a worker that animates reads (the evaluation's and the generation job's worker specs)."""

    model: ModelConfig
    sampling: SamplingConfig
    generate: GenerateConfig
    storage: StorageConfig
    checkpoint: ResolvedCheckpoint
    device: str
    num_threads: int


class AnimatorWorker:
    """A worker (a Ray actor or this process) holding one loaded :class:`Animator`, its storage and a scratch
    folder of its own; the evaluation and generation workers build on it."""

    def __init__(self, spec: AnimatorSpec, scratch_prefix: str) -> None:
        if spec.num_threads:
            torch.set_num_threads(spec.num_threads)
        self.storage = Storage.from_config(spec.storage)
        self.scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix))
        self.device = pick_device(spec.device)
        self.animator = Animator.load(
            spec.model,
            spec.sampling,
            spec.generate,
            spec.checkpoint,
            self.storage,
            self.device,
            self.scratch / "model",
        )

    def ready(self) -> str:
        """The device this worker runs on (Ray: wait for actors to finish loading)."""
        return self.device
