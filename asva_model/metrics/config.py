"""`eval.metrics` config section: which paper metrics to compute and where each network's weights live.

Pure dataclass (no Ray, no platform imports). Weight paths are local files or directories: nothing is
downloaded; the evaluation job stages remote weights to a local path before loading (see docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_model.errors import require

MetricName = Literal["fid", "fvd", "ia", "it", "relsync", "alignsync", "sync", "avalign", "picture"]

ALL_METRICS: tuple[str, ...] = (
    "fid",
    "fvd",
    "ia",
    "it",
    "relsync",
    "alignsync",
    "sync",
    "avalign",
    "picture",
)

# Which networks each metric needs (AlignSync = RelSync x P_Align, and P_Align uses ImageBind IA cosines).
NETWORKS_BY_METRIC: dict[str, tuple[str, ...]] = {
    "fid": ("inception",),
    "fvd": ("i3d",),
    "ia": ("imagebind",),
    "it": ("imagebind",),
    "relsync": ("avsync",),
    "alignsync": ("avsync", "imagebind"),
    "sync": (),
    "avalign": (),
    "picture": (),
}

MIN_SYNC_SHIFT_S = 0.5


@dataclass
class MetricsConfig:
    metrics: list[MetricName] = field(default_factory=lambda: list(ALL_METRICS))
    """Metrics to compute: fid, fvd, ia, it, relsync, alignsync (the paper's), sync and picture (weights-free:
    frame 0 against the conditioning image, colour error and drift; asva_model/metrics/picture.py)."""
    inception_weights: str = "pretrained/pt_inception-2015-12-05-6726825d.pth"
    """FID: pytorch-fid FID-Inception state dict (keys as pt_inception-2015-12-05); width inferred from it."""
    i3d_weights: str = "pretrained/i3d_torchscript.pt"
    """FVD: TorchScript I3D detector (StyleGAN-V's), called with rescale=False, resize=False, return_features=True."""
    imagebind_weights: str = "pretrained/imagebind_huge.pth"
    """IA/IT/AlignSync: ImageBind state dict (imagebind_huge.pth); dims and depths inferred from it."""
    imagebind_bpe: str = "pretrained/bpe_simple_vocab_16e6.txt.gz"
    """IT: ImageBind's (CLIP's) BPE merges file, gzipped text, for the text tokenizer."""
    imagebind_num_heads: list[int] = field(default_factory=lambda: [16, 16, 12])
    """Attention heads of the ImageBind [vision, text, audio] trunks (not recoverable from weights; Huge: 16/16/12)."""
    avsync_classifier: str = "pretrained/avsync/vggss_sync_contrast/ckpts/checkpoint-40000/modules"
    """RelSync/AlignSync: sync-classifier `modules/` dir with audio_encoder/, video_encoder/, head/ (save_pretrained)."""
    fid_batchnorm: Literal["eval", "authors"] = "eval"
    """FID-Inception BatchNorm: `eval` uses the trained statistics (as pytorch-fid); `authors` normalises with
    each forward call's batch statistics, as the paper's evaluation (its Inception is never put in eval
    mode), calling it once per ground-truth video (3 windows x 12 frames) and once per generated clip (12
    frames). It moves FID by orders of magnitude. Set by the `protocol` switch."""
    fid_image_size: int = 229
    """FID: frames are resized bicubic to this square size (the paper's code: 229, not Inception's usual 299)."""
    fvd_image_size: int = 224
    """FVD: frames are resized bicubic to this square size before the I3D (the paper: 224)."""
    batch_size: int = 32
    """Images (FID, IA/IT) or clips x frames per network forward; lower it if the device runs out of memory."""
    sync_shift_s: float = 1.0
    """Sync and AV-Align control: each generated clip is also scored against its own audio circularly shifted by
    this many seconds (Sync_shifted, Sync_win_rate, AVAlign_shifted); >= 0.5 and below the clip duration (half of it moves audio farthest)."""

    def __post_init__(self) -> None:
        require(len(self.metrics) > 0, "metrics", "must name at least one metric")
        require(len(set(self.metrics)) == len(self.metrics), "metrics", f"has duplicates: {self.metrics}")
        for name in self.metrics:
            require(
                name in ALL_METRICS,
                "metrics",
                f"unknown metric {name!r}; choose from {', '.join(ALL_METRICS)}",
            )
        for net in self.required_networks():
            for key in _WEIGHT_KEYS[net]:
                require(bool(getattr(self, key)), key, f"must be set to compute {self._users_of(net)}")
        if "it" in self.metrics:
            require(
                bool(self.imagebind_bpe), "imagebind_bpe", "must be set to compute it (the text tokenizer)"
            )
        require(
            len(self.imagebind_num_heads) == 3 and all(h >= 1 for h in self.imagebind_num_heads),
            "imagebind_num_heads",
            f"must be 3 positive ints [vision, text, audio], got {self.imagebind_num_heads}",
        )
        require(
            self.fid_batchnorm in ("eval", "authors"),
            "fid_batchnorm",
            f"must be eval or authors, got {self.fid_batchnorm!r}",
        )
        require(
            self.fid_image_size >= 75,
            "fid_image_size",
            f"must be >= 75 (Inception minimum), got {self.fid_image_size}",
        )
        require(self.fvd_image_size >= 32, "fvd_image_size", f"must be >= 32, got {self.fvd_image_size}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        # a shorter shift leaves onsets a frame or two from their motion: not a clear mismatch to compare with
        require(
            self.sync_shift_s >= MIN_SYNC_SHIFT_S,
            "sync_shift_s",
            f"must be >= {MIN_SYNC_SHIFT_S} s, got {self.sync_shift_s}",
        )

    def required_networks(self) -> list[str]:
        """Networks the selected metrics need, in a fixed order: inception, i3d, imagebind, avsync."""
        needed = {net for m in self.metrics for net in NETWORKS_BY_METRIC[m]}
        return [n for n in ("inception", "i3d", "imagebind", "avsync") if n in needed]

    def _users_of(self, net: str) -> str:
        return "/".join(m for m in self.metrics if net in NETWORKS_BY_METRIC[m])


_WEIGHT_KEYS: dict[str, tuple[str, ...]] = {
    "inception": ("inception_weights",),
    "i3d": ("i3d_weights",),
    "imagebind": ("imagebind_weights",),
    "avsync": ("avsync_classifier",),
}
