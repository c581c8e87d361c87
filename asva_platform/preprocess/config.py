"""`preprocess` config section: the Ray Data job that builds the latent cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from asva_platform.config import require


@dataclass
class PreprocessConfig:
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    """Dataset splits to cache (`train`, `test`)."""
    windows_per_clip: int = 0
    """Grid-aligned 2 s windows per clip: 0 = every window at a stride of 1/fps, N = N evenly spaced."""
    flips: bool = True
    """Also cache the horizontally flipped frames (the paper's only augmentation)."""
    decode_concurrency: int = 2
    """Parallel CPU decode tasks."""
    encode_concurrency: int = 1
    """VAE/audio-encoder actors."""
    encode_num_gpus: float = 0.0
    """GPUs per encoder actor (0 on CPU)."""
    batch_size: int = 8
    """Windows per `map_batches` batch."""
    encode_memory_gb: float = 2.0
    """Memory reserved per encoder actor (Ray Data cannot prevent OOMs without it)."""
    rows_per_shard: int = 64
    """Rows per Parquet shard."""

    def validate(self) -> None:
        require(all(s in ("train", "test") for s in self.splits), "splits", f"must be train/test, got {self.splits}")
        require(self.windows_per_clip >= 0, "windows_per_clip", "must be >= 0")
        require(self.decode_concurrency >= 1, "decode_concurrency", "must be >= 1")
        require(self.encode_concurrency >= 1, "encode_concurrency", "must be >= 1")
        require(self.encode_num_gpus >= 0, "encode_num_gpus", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.rows_per_shard >= 1, "rows_per_shard", "must be >= 1")
