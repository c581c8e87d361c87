"""`eval` config section: the paper's generation + evaluation protocol."""

from __future__ import annotations

from dataclasses import dataclass

from asva_platform.config import require


@dataclass
class EvalConfig:
    audio_guidance_scale: float = 4.0
    """Audio classifier-free guidance scale s (the paper's default: 4.0)."""
    text_guidance_scale: float = 1.0
    """Text guidance scale (1.0 = audio-only CFG, as the paper)."""
    num_inference_steps: int = 50
    """PNDM steps (the paper: 50)."""
    seed: int = 0
    """Generation seed (the paper's evaluation: 0)."""
    max_videos: int = 0
    """Evaluate at most this many test videos (0 = all)."""

    def validate(self) -> None:
        require(self.audio_guidance_scale >= 0, "audio_guidance_scale", "must be >= 0")
        require(self.num_inference_steps >= 1, "num_inference_steps", "must be >= 1")
        require(self.max_videos >= 0, "max_videos", "must be >= 0")
