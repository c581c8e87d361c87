"""The latent-cache contract: the on-disk format on object storage, written by preprocessing, read by training.

Layout of one cache (``<storage.root>/caches/<cache_id>/``, see docs/preprocess.md)::

    shards/<split>/part-00000.parquet   one row per clip window (both flips in the row)
    text_encodings.npz                  class_dir -> (77, D) float32, once per class
    null_audio_tokens.npy               (229, D) float32: the audio encoder on an all-zero mel
    manifest.json                       :class:`CacheManifest`, written last; readers open only caches that have it

Tensor columns use Arrow's canonical ``arrow.fixed_shape_tensor`` type, which both pyarrow and Ray Data
read back as ``(rows, *shape)`` numpy arrays. Latents are stored UNSCALED (the VAE's own units); the loss
multiplies them by the VAE scaling factor (0.18215).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from asva_platform.artifacts.records import check_version
from asva_platform.errors import UserError
from asva_platform.storage import Storage, is_s3, join

FORMAT = "asva-latent-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TEXT_FILE = "text_encodings.npz"
NULL_AUDIO_FILE = "null_audio_tokens.npy"
SHARDS_DIR = "shards"

# Row columns: metadata, then fp16 tensors. The *_flip columns exist when the cache holds flips.
META_COLUMNS = ("window_id", "clip", "class_dir", "split", "start", "frame_times")
LATENT_COLUMNS = ("latent_mean", "latent_std")
FLIP_COLUMNS = ("latent_mean_flip", "latent_std_flip")
AUDIO_COLUMN = "audio_tokens"
TRAINING_COLUMNS = ("window_id", "class_dir", *LATENT_COLUMNS, *FLIP_COLUMNS, AUDIO_COLUMN)
"""What training reads of a row (the *_flip columns where the cache has them)."""

# Parquet key-value metadata of every shard: enough to rebuild the manifest without reading rows.
META_KEY = b"asva.shard"


class CacheError(UserError):
    """A cache that cannot be opened (no manifest, wrong format); one line naming it."""


def shard_name(split: str, index: int) -> str:
    """Deterministic shard path relative to the cache root."""
    return f"{SHARDS_DIR}/{split}/part-{index:05d}.parquet"


# ---------------------------------------------------------------------------------------------
# Shard tables


@dataclass(frozen=True)
class CacheLayout:
    """Tensor shapes of a cache's rows (fixed per cache)."""

    latent: tuple[int, ...]
    """(C, frames, h, w) of one latent mean/std."""
    audio: tuple[int, int]
    """(tokens, D) of the audio tokens."""
    num_frames: int
    flips: bool

    def schema(self):
        import pyarrow as pa

        fields = [
            ("window_id", pa.string()),
            ("clip", pa.string()),
            ("class_dir", pa.string()),
            ("split", pa.string()),
            ("start", pa.float64()),
            ("frame_times", pa.fixed_shape_tensor(pa.float64(), (self.num_frames,))),
        ]
        latent = pa.fixed_shape_tensor(pa.float16(), self.latent)
        fields += [(c, latent) for c in LATENT_COLUMNS + (FLIP_COLUMNS if self.flips else ())]
        fields.append((AUDIO_COLUMN, pa.fixed_shape_tensor(pa.float16(), self.audio)))
        return pa.schema(fields)

    @property
    def columns(self) -> tuple[str, ...]:
        return META_COLUMNS + LATENT_COLUMNS + (FLIP_COLUMNS if self.flips else ()) + (AUDIO_COLUMN,)

    def to_dict(self) -> dict:
        return {
            "latent": list(self.latent),
            "audio": list(self.audio),
            "num_frames": self.num_frames,
            "flips": self.flips,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CacheLayout:
        return cls(tuple(d["latent"]), tuple(d["audio"]), int(d["num_frames"]), bool(d["flips"]))


def build_shard_table(layout: CacheLayout, columns: dict[str, np.ndarray], meta: dict):
    """A pyarrow Table of ``columns`` (equal-length arrays, tensors as (rows, *shape)) in ``layout``'s schema,
    with ``meta`` (JSON-able) stored as the shard's key-value metadata."""
    import pyarrow as pa

    schema = layout.schema()
    rows = len(columns["window_id"]) if columns else 0
    if rows == 0:
        table = schema.empty_table()
    else:
        arrays = []
        for f in schema:
            values = columns[f.name]
            if isinstance(f.type, pa.FixedShapeTensorType):
                dtype = np.float16 if f.type.value_type == pa.float16() else np.float64
                arrays.append(
                    pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values, dtype=dtype))
                )
            else:
                arrays.append(pa.array(list(values), type=f.type))
        table = pa.Table.from_arrays(arrays, schema=schema)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})


def table_bytes(table) -> bytes:
    """Parquet bytes of a shard table (built in memory so the object is written in one atomic PUT)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    # Dictionaries and min/max statistics only pay off for the repeated strings; on tensor columns they
    # cost most of the write time for nothing.
    pq.write_table(
        table, buf, compression="zstd", use_dictionary=["clip", "class_dir", "split"], write_statistics=False
    )
    return buf.getvalue()


def table_to_columns(table) -> dict[str, np.ndarray]:
    """A shard table as numpy columns (tensors as (rows, *shape), strings as object arrays)."""
    import pyarrow as pa

    out: dict[str, np.ndarray] = {}
    for f in table.schema:
        col = table.column(f.name)
        if isinstance(f.type, pa.FixedShapeTensorType):
            shape = tuple(f.type.shape)
            dtype = f.type.value_type.to_pandas_dtype()
            out[f.name] = (
                col.combine_chunks().to_numpy_ndarray()
                if table.num_rows
                else np.zeros((0, *shape), dtype=dtype)
            )
        else:
            out[f.name] = np.asarray(col.to_pylist(), dtype=object if pa.types.is_string(f.type) else None)
    return out


def shard_meta_from_schema(schema) -> dict | None:
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else None


def read_shard_meta(storage: Storage, uri: str) -> dict | None:
    """The shard's key-value metadata from its Parquet footer (a ranged read); None if absent/unreadable."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            return shard_meta_from_schema(pq.read_schema(f))
    except (OSError, ValueError):  # missing, truncated, not Parquet: treated as not written
        return None


def read_shard_table(storage: Storage, uri: str):
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    with fs.open_input_file(path) as f:
        return pq.read_table(f)


# ---------------------------------------------------------------------------------------------
# Side files


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Manifest


@dataclass
class ShardEntry:
    """One shard as the manifest records it."""

    path: str
    """Relative to the cache root (:func:`shard_name`)."""
    rows: int
    clips: int
    """Clips planned into it."""
    clips_ok: int
    """Clips that gave at least one window."""
    bytes: int


@dataclass
class SplitSummary:
    """One split of a cache: its shards and what they hold."""

    shards: list[ShardEntry]
    rows: int
    windows: int
    samples: int
    """Rows x flip variants."""
    clips: int
    clips_listed: int
    per_class: dict[str, int]
    """Windows per class."""
    clips_per_class: dict[str, int]
    skipped: list[dict[str, Any]]
    """Every list entry or clip left out: {path, reason, detail, split, ...}."""
    bytes: int


@dataclass
class CacheTotals:
    clips: int
    clips_listed: int
    windows: int
    rows: int
    samples: int
    bytes: int
    skipped: int


@dataclass
class CacheManifest:
    """``manifest.json``: what a complete cache holds. Written last by preprocessing, read by training; the
    layout's columns, the side files and the format are fixed by this module."""

    cache_id: str
    layout: CacheLayout
    splits: dict[str, SplitSummary]
    latent_scaling_factor: float
    """The VAE's (latents are stored unscaled: the loss multiplies by it)."""
    text_classes: list[str]
    identity: dict[str, Any]
    """What the cache id hashes (dataset, sampling, preprocessing, encoder fingerprints)."""
    config: dict[str, Any]
    """The dataset, sampling, model and preprocess sections it was built with."""
    code_version: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    totals: CacheTotals | None = None
    """Sums over the splits (derived when not given)."""

    def __post_init__(self) -> None:
        if self.totals is None:
            ss = self.splits.values()
            self.totals = CacheTotals(
                *(
                    sum(getattr(s, k) for s in ss)
                    for k in ("clips", "clips_listed", "windows", "rows", "samples", "bytes")
                ),
                sum(len(s.skipped) for s in ss),
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON layout of format version 1 (a cache written before these types reads the same)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "code_version": self.code_version,
            "cache_id": self.cache_id,
            "created": self.created,
            "layout": self.layout.to_dict(),
            "columns": list(self.layout.columns),
            "latents_scaled": False,
            "latent_scaling_factor": self.latent_scaling_factor,
            "text_encodings": TEXT_FILE,
            "null_audio_tokens": NULL_AUDIO_FILE,
            "text_classes": self.text_classes,
            "splits": {k: asdict(v) for k, v in self.splits.items()},
            "totals": asdict(self.totals),
            "identity": self.identity,
            "config": self.config,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = MANIFEST) -> CacheManifest:
        if data.get("format") != FORMAT:
            raise CacheError(f"{where}: not a {FORMAT} manifest (format {data.get('format')!r})")
        check_version(data.get("format_version"), FORMAT_VERSION, where)
        splits = {
            k: SplitSummary(**{**v, "shards": [ShardEntry(**sh) for sh in v["shards"]]})
            for k, v in data["splits"].items()
        }
        return cls(
            data["cache_id"],
            CacheLayout.from_dict(data["layout"]),
            splits,
            data["latent_scaling_factor"],
            data["text_classes"],
            data["identity"],
            data["config"],
            data.get("code_version", ""),
            data["created"],
            CacheTotals(**data["totals"]),
        )

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Every entry left out, all splits."""
        return [entry for split in self.splits.values() for entry in split.skipped]

    def damaged_parts(self, sizes: dict[str, int]) -> list[str]:
        """Files this manifest promises that are missing or have another size, given every object's size under
        the cache (deleted or replaced after the build). Empty = the cache is intact."""
        bad = [
            sh.path for split in self.splits.values() for sh in split.shards if sizes.get(sh.path) != sh.bytes
        ]
        return bad + [f for f in (TEXT_FILE, NULL_AUDIO_FILE) if f not in sizes]


def summarize_split(
    split: str,
    shards: list[tuple[str, int]],
    metas: dict[str, dict],
    sizes: dict[str, int],
    listed_skips: list[dict[str, Any]],
    flips: bool,
) -> SplitSummary:
    """One split's summary from its shards' footer metadata (:data:`META_KEY`: rows, clips, per-class counts,
    skips) and their sizes; ``shards`` is ``[(name, clips planned)]``; ``listed_skips``: the list file's."""
    entries, per_class, clips_per_class = [], {}, {}
    skipped = list(listed_skips)
    for name, _ in shards:
        m = metas[name]
        entries.append(ShardEntry(name, m["rows"], len(m["clips"]), m["clips_ok"], sizes.get(name, 0)))
        for k, v in m["per_class"].items():
            per_class[k] = per_class.get(k, 0) + v
        for k, v in m["clips_per_class"].items():
            clips_per_class[k] = clips_per_class.get(k, 0) + v
        skipped += [{**s, "split": split} for s in m["skipped"]]
    rows = sum(e.rows for e in entries)
    return SplitSummary(
        entries,
        rows,
        rows,
        rows * (2 if flips else 1),
        sum(e.clips_ok for e in entries),
        sum(e.clips for e in entries),
        dict(sorted(per_class.items())),
        dict(sorted(clips_per_class.items())),
        skipped,
        sum(e.bytes for e in entries),
    )


def completed_shards(
    storage: Storage, cache_uri: str, cache_id: str, planned: list[tuple[str, list[str]]]
) -> dict[str, dict]:
    """The planned shards (``[(name, clips)]``) already written for this cache: name -> footer metadata. A shard
    counts only if its footer names this cache_id, this shard and the same clips (anything else is rebuilt):
    what a resumed build keeps."""
    present = set(storage.list(join(cache_uri, SHARDS_DIR)))
    done = {}
    for name, clips in planned:
        uri = join(cache_uri, name)
        if uri not in present:
            continue
        meta = read_shard_meta(storage, uri)
        if (
            meta
            and meta.get("cache_id") == cache_id
            and meta.get("shard") == name
            and meta.get("clips") == clips
        ):
            done[name] = meta
    return done


# ---------------------------------------------------------------------------------------------
# Reader


def cache_uri_for(ref: str, cache_root: str) -> str:
    """A cache_id is looked up under ``cache_root``; anything with a scheme or a slash is already a URI/path."""
    if is_s3(ref) or "/" in ref or ref.startswith("."):
        return ref.rstrip("/")
    return join(cache_root, ref)


class CacheHandle:
    """A complete cache (it has a manifest). Shard URIs come from the manifest, never from listing."""

    def __init__(self, storage: Storage, uri: str, manifest: CacheManifest) -> None:
        self.storage = storage
        self.uri = uri
        self.manifest = manifest
        self.cache_id = manifest.cache_id
        self.layout = manifest.layout

    @property
    def splits(self) -> list[str]:
        return sorted(self.manifest.splits)

    def _split(self, split: str) -> SplitSummary:
        if split not in self.manifest.splits:
            raise CacheError(f"cache {self.uri} has no split {split!r} (it has {', '.join(self.splits)})")
        return self.manifest.splits[split]

    def shard_uris(self, split: str = "train", include_empty: bool = False) -> list[str]:
        return [join(self.uri, s.path) for s in self._split(split).shards if include_empty or s.rows]

    def num_rows(self, split: str = "train") -> int:
        return self._split(split).rows

    def ray_dataset(self, split: str = "train", columns: list[str] | None = None, **read_kwargs: Any):
        """A streaming ``ray.data`` dataset over the split's shards (Parquet, read lazily)."""
        import ray.data

        uris = self.shard_uris(split)
        if not uris:
            raise CacheError(f"cache {self.uri}: split {split!r} has no rows")
        fs, _ = self.storage.filesystem(uris[0])
        paths = [self.storage.filesystem(u)[1] for u in uris]
        return ray.data.read_parquet(paths, filesystem=fs, columns=columns, **read_kwargs)

    def iter_batches(self, split: str = "train") -> Iterator[dict[str, np.ndarray]]:
        """One numpy batch per shard, read locally with pyarrow (no Ray)."""
        for uri in self.shard_uris(split):
            yield table_to_columns(read_shard_table(self.storage, uri))

    def iter_rows(self, split: str = "train") -> Iterator[dict]:
        """Rows as dicts of numpy values, read locally (tests, debugging)."""
        for batch in self.iter_batches(split):
            n = len(batch["window_id"])
            for i in range(n):
                yield {k: v[i] for k, v in batch.items()}

    def text_encodings(self) -> dict[str, np.ndarray]:
        """class_dir -> (77, D) float32."""
        with np.load(io.BytesIO(self.storage.read_bytes(join(self.uri, TEXT_FILE)))) as z:
            return {k: z[k] for k in z.files}

    def null_audio_tokens(self) -> np.ndarray:
        """(tokens, D) float32: the audio encoder's output for an all-zero normalised mel."""
        return np.load(io.BytesIO(self.storage.read_bytes(join(self.uri, NULL_AUDIO_FILE))))


def open_cache(storage: Storage, ref: str, cache_root: str) -> CacheHandle:
    """Open a complete cache by ``cache_id`` (under ``cache_root``) or full URI; one-line CacheError when it
    has no manifest (it was never built, or its build has not finished)."""
    uri = cache_uri_for(ref, cache_root)
    manifest_uri = join(uri, MANIFEST)
    if not storage.exists(manifest_uri):
        raise CacheError(
            f"no complete latent cache at {uri} ({MANIFEST} missing; build it with jobs.preprocess)"
        )
    return CacheHandle(storage, uri, CacheManifest.from_json(storage.read_json(manifest_uri), manifest_uri))
