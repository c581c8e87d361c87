"""What a cache build will do, decided on the driver before Ray starts: the dataset listing, the shards,
and the cache identity (``cache_id``).

``cache_id`` is the first 16 hex digits of a sha256 over everything that changes the cache's content:
the list files and class mapping (and the dataset root they are read from), the dataset and sampling
config, the preprocess content fields (splits, windows per clip, flips, shard size, encode dtype), the
weight fingerprints of the VAE and the audio encoder, the stored text encodings, the preprocessing code
version and the cache format version. Parallelism, batch sizes and memory settings are left out: they
change how fast a cache is built, never what it holds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from asva_model.data.avsync15 import SplitListing, file_size, read_split, read_text
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_platform import config as cfgmod
from asva_platform.artifacts.cache import FORMAT_VERSION, shard_name
from asva_platform.preprocess.config import PreprocessConfig

CODE_VERSION = 2  # 2: frames decoded with accurate colour conversion (asva_model.data.decode.frame_to_rgb)
"""Bump when a change to the preprocessing code changes what a cache holds (decoding, windowing, encoding,
row layout); old caches then get a new cache_id instead of being reused."""


@dataclass
class ShardPlan:
    name: str
    """Path relative to the cache root, e.g. `shards/train/part-00003.parquet`."""
    split: str
    tasks: list[dict] = field(default_factory=list)
    """One clip task per list entry: split, clip, path, class_dir, shard, order, span_start, span_end."""

    @property
    def clips(self) -> list[str]:
        return [t["clip"] for t in self.tasks]


def plan_shards(listings: dict[str, SplitListing], clips_per_shard: int) -> list[ShardPlan]:
    """Fixed groups of consecutive list entries per split, in list order: the same inputs always give the
    same shard names and contents."""
    shards: list[ShardPlan] = []
    for split, listing in listings.items():
        entries = listing.entries
        for i in range(math.ceil(len(entries) / clips_per_shard)):
            shard = ShardPlan(shard_name(split, i), split)
            for order, e in enumerate(entries[i * clips_per_shard : (i + 1) * clips_per_shard]):
                shard.tasks.append(
                    {
                        "split": split,
                        "clip": e.name,
                        "path": e.path,
                        "class_dir": e.class_dir,
                        "shard": shard.name,
                        "order": order,
                        "span_start": math.nan if e.start is None else float(e.start),
                        "span_end": math.nan if e.end is None else float(e.end),
                    }
                )
            shards.append(shard)
    return shards


def read_listings(
    dataset_cfg: DatasetConfig, splits: list[str], filesystem: Any = None, root: str = ""
) -> dict[str, SplitListing]:
    """Every split's listing, the dataset opened at ``root`` (see :func:`asva_model.data.avsync15.read_split`)."""
    return {split: read_split(dataset_cfg, split, filesystem, root=root) for split in splits}


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def dataset_identity(
    dataset_cfg: DatasetConfig, root: str, splits: list[str], filesystem: Any = None
) -> dict:
    """Hashes of the list files and the class mapping (the dataset opened at ``root``), plus the dataset settings
    and ``dataset.root``."""
    lists = {"train": dataset_cfg.train_list, "test": dataset_cfg.test_list}
    files = {
        name: _sha(read_text(root, name, filesystem))
        for name in sorted({lists[s] for s in splits} | {dataset_cfg.class_mapping})
        if file_size(root, name, filesystem) is not None
    }
    settings = {k: v for k, v in cfgmod.to_dict(dataset_cfg).items() if k != "root"}
    return {"root": dataset_cfg.root, "files": files, "settings": settings}


def arrays_fingerprint(arrays: dict) -> str:
    """sha256 of named numpy arrays (names, dtypes, shapes, bytes), independent of any file format."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def compute_cache_id(identity: dict) -> str:
    return _sha(json.dumps(identity, sort_keys=True, default=str))[:16]


def build_identity(
    *,
    dataset: dict,
    sampling_cfg: SamplingConfig,
    preprocess_cfg: PreprocessConfig,
    vae_fingerprint: str,
    audio_fingerprint: str,
    text_fingerprint: str,
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "code_version": CODE_VERSION,
        "dataset": dataset,
        "sampling": cfgmod.to_dict(sampling_cfg),
        "preprocess": preprocess_cfg.content(),
        "vae": vae_fingerprint,
        "audio_encoder": audio_fingerprint,
        "text_encodings": text_fingerprint,
    }
