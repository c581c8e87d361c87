"""Generation shared by the evaluation and generation jobs: load AVSyncD once, animate first frames.

:class:`Animator` holds the pipeline (the checkpoint's UNet + frozen VAE and audio encoder + PNDM), the
class-prompt encodings and the ``eval`` settings (steps, guidance scales, seed). Every clip is generated
from a fresh generator seeded with ``eval.seed``, so a clip's frames do not depend on which worker made it
or what it made before. Outputs are mp4 files at the sampling frame rate (6 fps, H.264) with the window's
audio (AAC at 16 kHz).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from asva_model.data.audio import resample, window_samples
from asva_model.data.sampling import transform_frames
from asva_model.video_io import write_video
from asva_platform.checkpoints import ResolvedCheckpoint, load_trained_unet
from asva_platform.errors import UserError
from asva_platform.storage import Storage, is_s3

_EXTRA_MODEL_PATHS = ("null_text_encoding", "init_unet")


def pick_device(setting: str) -> str:
    """``cuda`` or ``cpu`` for an ``eval.device`` setting (``auto``: cuda when this process sees a GPU)."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise UserError("eval.device=cuda but no GPU is visible to this process")
    return "cuda" if setting == "cuda" or (setting == "auto" and available) else "cpu"


def localize_model(model_cfg, storage: Storage, scratch: str | Path):
    """``model_cfg`` with every s3:// weight path replaced by a local copy under ``scratch``."""
    from asva_platform.preprocess.encoders import localize_model_paths

    model_cfg = localize_model_paths(model_cfg, storage, str(scratch))
    remote = {f: getattr(model_cfg, f) for f in _EXTRA_MODEL_PATHS if is_s3(getattr(model_cfg, f))}
    return dataclasses.replace(model_cfg, **{f: str(storage.localize(u, scratch)) for f, u in remote.items()})


class Animator:
    """AVSyncD inference with the experiment's ``eval`` settings."""

    def __init__(self, pipe, text_encodings, null_text, exp_cfg, device: str) -> None:
        self.pipe = pipe
        self.text = text_encodings
        self.null_text = null_text
        self.cfg = exp_cfg
        self.device = device

    @classmethod
    def load(cls, exp_cfg, checkpoint: ResolvedCheckpoint, storage: Storage, device: str = "cpu",
             scratch: str | Path | None = None) -> Animator:
        from asva_model.build import build_inference_scheduler
        from asva_model.pipeline import AVSyncPipeline
        from asva_model.text import load_null_text_encoding, load_text_encodings
        from asva_platform.preprocess.encoders import load_frozen_encoders

        scratch = scratch or tempfile.mkdtemp(prefix="asva-model-")
        model_cfg = localize_model(exp_cfg.model, storage, scratch)
        if not model_cfg.text_encodings:
            raise UserError("model.text_encodings: required (AVSyncD is conditioned on the class prompt's encoding)")
        width = model_cfg.resolved().unet.cross_attention_dim
        try:
            text = load_text_encodings(model_cfg.text_encodings, width)
            null_text = None
            if exp_cfg.eval.text_guidance_scale != 1.0:
                if not model_cfg.null_text_encoding:
                    raise UserError("eval.text_guidance_scale != 1 needs model.null_text_encoding")
                null_text = load_null_text_encoding(model_cfg.null_text_encoding, width)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"model: {err}") from None
        local_cfg = dataclasses.replace(exp_cfg, model=model_cfg)
        unet = load_trained_unet(local_cfg, checkpoint, storage, device)
        vae, audio = load_frozen_encoders(model_cfg, device)
        pipe = AVSyncPipeline(unet, vae, audio, build_inference_scheduler(model_cfg))
        return cls(pipe, text, null_text, exp_cfg, device)

    def prompt_encoding(self, prompt: str) -> torch.Tensor:
        try:
            return self.text.lookup([prompt])
        except KeyError as err:
            raise UserError(str(err.args[0])) from None

    @torch.no_grad()
    def animate(self, image, mel, prompt: str) -> torch.Tensor:
        """``image`` (3, H, W) in [0, 1], ``mel`` (1, bins, frames) normalised log-mel of the 2 s window ->
        (num_frames, 3, H, W) float in [0, 1]; frame 0 is the decoded condition."""
        e, s = self.cfg.eval, self.cfg.sampling
        image = torch.as_tensor(image, dtype=torch.float32)[None]
        mel = torch.as_tensor(mel, dtype=torch.float32)[None]
        out = self.pipe(image, self.prompt_encoding(prompt), mel, num_frames=s.num_frames,
                        num_inference_steps=e.num_inference_steps, audio_guidance_scale=e.audio_guidance_scale,
                        text_guidance_scale=e.text_guidance_scale, null_text_emb=self.null_text,
                        generator=torch.Generator().manual_seed(e.seed))
        return out.frames[0]

    def write(self, path: str | Path, frames, waveform) -> Path:
        """An mp4 at the sampling frame rate with ``waveform`` (mono, sampling rate) as its AAC track."""
        s = self.cfg.sampling
        return write_video(path, frames, waveform, fps=s.fps, sample_rate=s.audio_sample_rate)


# ---------------------------------------------------------------------------------------------
# Inputs of the generation job: any image file + any audio file.


def load_image(path: str | Path, sampling) -> np.ndarray:
    """An image file as (3, H, W) float32 in [0, 1], centre-cropped and resized like dataset frames."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise UserError(f"image {path}: cannot read ({type(err).__name__})") from None
    return transform_frames([rgb], sampling)[:, 0]


def load_audio_window(path: str | Path, sampling, start: float = 0.0) -> np.ndarray:
    """``clip_samples`` mono samples at the sampling rate from ``start`` s of an audio file (zero-padded if the
    file ends sooner)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.LibsndfileError) as err:
        raise UserError(f"audio {path}: cannot read ({str(err).splitlines()[0][:120]})") from None
    if data.shape[0] == 0:
        raise UserError(f"audio {path}: no samples")
    if start < 0 or start >= data.shape[0] / rate:
        raise UserError(f"audio {path}: start {start} s is outside the file ({data.shape[0] / rate:.2f} s)")
    mono = resample(data.mean(axis=1), rate, sampling.audio_sample_rate)
    return window_samples(mono, 0.0, start, sampling)
