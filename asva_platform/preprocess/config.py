"""`preprocess` config section: the Ray Data job that builds the latent cache (docs/preprocess.md).

Fields marked "content" change what the cache holds and are part of its ``cache_id``; the others only
change how fast it is built (parallelism, batch sizes, memory) and never invalidate a cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_model.errors import require

CONTENT_FIELDS = ("splits", "windows_per_clip", "flips", "clips_per_shard", "encode_dtype")
"""The fields of :class:`PreprocessConfig` that go into the cache_id."""


@dataclass
class PreprocessConfig:
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    """Content: dataset splits to cache (`train`, `test`)."""
    windows_per_clip: int = 0
    """Content: grid-aligned 2 s windows per clip: 0 = every window at a stride of 1/fps, N = N evenly spaced."""
    flips: bool = True
    """Content: also cache the latents of the horizontally flipped frames (the paper's only augmentation);
    both flips share a row, so audio tokens are stored once per window."""
    clips_per_shard: int = 8
    """Content (layout): clips per Parquet shard. Shards are fixed groups of list entries, named by split and
    index, so a resumed run knows exactly which are missing."""
    encode_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    """Content: dtype the VAE and audio encoder run in (fp16/bf16 only make sense on GPUs); outputs are
    stored as fp16 either way."""
    decode_concurrency: int = 2
    """Parallel CPU decode workers (the decode stage's actor pool size)."""
    decode_num_cpus: float = 1.0
    """CPUs reserved per decode worker."""
    decode_batch_size: int = 1
    """Clips per decode call (`map_batches` batch_size of the decode stage)."""
    decode_memory_gb: float = 1.0
    """Memory reserved per decode worker (Ray `memory=`): a decoded clip holds all its windows' frames."""
    encode_concurrency: int = 1
    """VAE/audio-encoder actors (one per GPU on a cluster)."""
    encode_num_gpus: float = 0.0
    """GPUs per encoder actor (0 on CPU)."""
    encode_num_cpus: float = 1.0
    """CPUs reserved per encoder actor; also its torch thread count on CPU."""
    batch_size: int = 2
    """Clips per encoder `map_batches` batch."""
    vae_chunk_frames: int = 16
    """Frames per VAE forward pass (bounds activation memory; may change results in the last bits)."""
    audio_chunk_windows: int = 16
    """Windows per audio-encoder forward pass (bounds memory; may change results in the last bits)."""
    encode_memory_gb: float = 2.0
    """Memory reserved per encoder actor (Ray Data cannot prevent OOMs without it)."""
    write_memory_gb: float = 1.0
    """Memory reserved for the shard writer, which holds the rows of shards still being completed."""

    def __post_init__(self) -> None:
        require(bool(self.splits), "splits", "must name at least one split")
        require(
            all(s in ("train", "test") for s in self.splits),
            "splits",
            f"must be train/test, got {self.splits}",
        )
        require(len(set(self.splits)) == len(self.splits), "splits", f"has duplicates: {self.splits}")
        require(self.windows_per_clip >= 0, "windows_per_clip", "must be >= 0")
        require(self.clips_per_shard >= 1, "clips_per_shard", "must be >= 1")
        require(self.decode_concurrency >= 1, "decode_concurrency", "must be >= 1")
        require(self.decode_num_cpus > 0, "decode_num_cpus", "must be > 0")
        require(self.decode_batch_size >= 1, "decode_batch_size", "must be >= 1")
        require(self.encode_concurrency >= 1, "encode_concurrency", "must be >= 1")
        require(self.encode_num_gpus >= 0, "encode_num_gpus", "must be >= 0")
        require(self.encode_num_cpus > 0, "encode_num_cpus", "must be > 0")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.vae_chunk_frames >= 1, "vae_chunk_frames", "must be >= 1")
        require(self.audio_chunk_windows >= 1, "audio_chunk_windows", "must be >= 1")
        for name in ("decode_memory_gb", "encode_memory_gb", "write_memory_gb"):
            require(getattr(self, name) > 0, name, "must be > 0")
        require(
            self.encode_dtype == "fp32" or self.encode_num_gpus > 0,
            "encode_dtype",
            f"{self.encode_dtype} needs GPUs (encode_num_gpus > 0); use fp32 on CPU",
        )

    def content(self) -> dict:
        """The content fields as a plain dict (what the cache_id hashes)."""
        return {name: getattr(self, name) for name in CONTENT_FIELDS}
