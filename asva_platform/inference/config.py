"""``generate`` config section: how AVSyncD animates a first frame with its audio (guidance, steps, sampler,
seed, audio encoder). Owned by the inference pipeline (:class:`~asva_platform.inference.animator.Animator`);
training validation, the generation job, evaluation and their actors all read it from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from asva_model.errors import require


@dataclass
class GenerateConfig:
    audio_guidance_scale: float = 4.0
    """Audio classifier-free guidance scale s (the paper's default: 4.0)."""
    text_guidance_scale: float = 1.0
    """Text guidance scale (1.0 = audio-only CFG, as the paper); != 1 needs model.null_text_encoding."""
    num_inference_steps: int = 50
    """PNDM steps (the paper: 50)."""
    sampler: Literal["standard", "authors"] = "standard"
    """How PNDM steps are applied. `standard`: each step gets a fresh tensor (textbook PNDM). `authors`: each
    step's result is written into the latents in place, as the paper's pipeline does; PNDM still holds its
    first step's sample by reference, so its second step reads the updated latents (max |diff| 0.66 after
    3 steps on the same noise). Set by the `protocol` switch."""
    audio_encoder_source: Literal["checkpoint", "imagebind"] = "checkpoint"
    """Which audio encoder generation uses. `checkpoint`: the encoder saved with the checkpoint where it has
    one (the authors' `modules/audio_encoder`, saved from an fp16-cast copy), else model.audio_encoder_weights,
    the encoder the run trained with. `imagebind`: always a fresh encoder from model.audio_encoder_weights
    (ImageBind's file), as the paper's evaluation builds it. Set by the `protocol` switch."""
    seed: int = 0
    """Generation seed (the paper's evaluation: 0); every clip starts from this seed, so results do not
    depend on how clips are spread over workers."""

    def __post_init__(self) -> None:
        require(self.audio_guidance_scale >= 0, "audio_guidance_scale", "must be >= 0")
        require(self.text_guidance_scale >= 0, "text_guidance_scale", "must be >= 0")
        require(self.num_inference_steps >= 1, "num_inference_steps", "must be >= 1")
        require(self.seed >= 0, "seed", "must be >= 0")
        require(
            self.sampler in ("standard", "authors"),
            "sampler",
            f"must be standard or authors, got {self.sampler!r}",
        )
        require(
            self.audio_encoder_source in ("checkpoint", "imagebind"),
            "audio_encoder_source",
            f"must be checkpoint or imagebind, got {self.audio_encoder_source!r}",
        )
