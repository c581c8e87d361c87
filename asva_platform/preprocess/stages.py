"""The three stages of the cache build, as callables that work on numpy batches.

Ray Data runs them as class-based ``map_batches`` UDFs (decode on CPU actors, encode on an actor pool with
GPUs when configured, one shard writer); the benchmark's sequential baseline calls the very same objects
in one process. Batches are ``dict[str, np.ndarray]``; variable-sized tensors travel as object arrays.

* :class:`DecodeClips`: one clip -> its grid windows, decoded once. Frames shared by overlapping windows
  are kept once (``frames`` + a per-window ``frame_index``), since the VAE encodes frames independently.
  A bad clip becomes a record with its typed skip reason instead of an error.
* :class:`EncodeWindows`: VAE latent_dist mean/std of every unique frame (and of its horizontal flip),
  gathered per window; audio tokens once per window. Output: one row per window, fp16 tensors.
* :class:`ShardWriter`: collects rows by shard and writes a shard as soon as all its clips are in (one
  atomic object write each), returning one summary row per shard written.
"""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from typing import Any

import numpy as np

from asva_model.config import ModelConfig
from asva_model.data.avsync15 import ClipEntry, open_file
from asva_model.data.config import SamplingConfig
from asva_model.data.decode import check_long_enough
from asva_model.data.errors import BadClipError, SkipReason
from asva_model.data.sampling import (
    decode_windows,
    entry_span,
    grid_window_starts,
    probe,
    window_from_decoded,
)
from asva_model.objective import encode_frames
from asva_platform.artifacts.cache import (
    FLIP_COLUMNS,
    LATENT_COLUMNS,
    CacheLayout,
    build_shard_table,
    table_bytes,
)
from asva_platform.config import from_dict
from asva_platform.inference.weights import load_frozen_encoders, localize_model_paths
from asva_platform.storage import Storage, is_s3, join

# Columns that only travel inside the pipeline (not stored in shards).
PIPELINE_COLUMNS = ("shard", "order", "clip_windows", "skip_reason", "skip_detail")


# ---------------------------------------------------------------------------------------------
# Batches <-> records


def records_to_batch(records: list[dict]) -> dict[str, np.ndarray]:
    """Records with equal keys -> a numpy batch. Same-shaped tensors are stacked; differently shaped ones
    become an object array (Ray Data stores those as variable-shaped tensors)."""
    if not records:
        return {}
    out: dict[str, np.ndarray] = {}
    for key in records[0]:
        values = [r[key] for r in records]
        if isinstance(values[0], np.ndarray):
            if all(v.shape == values[0].shape for v in values):
                out[key] = np.stack(values)
            else:
                arr = np.empty(len(values), dtype=object)
                for i, v in enumerate(values):
                    arr[i] = v
                out[key] = arr
        elif isinstance(values[0], str):
            out[key] = np.array(values, dtype=object)
        else:
            out[key] = np.array(values)
    return out


def batch_to_records(batch: dict[str, np.ndarray]) -> list[dict]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def concat_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    batches = [b for b in batches if b and len(next(iter(b.values())))]
    if not batches:
        return {}
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# Decode


def _span(value: Any) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v


def entry_id(clip: str, start: float | None, end: float | None) -> str:
    """A list entry's id: the clip path, plus its span for `clip` lists (one file may be listed twice)."""
    return clip if start is None else f"{clip}[{start:g}:{end if end is not None else ''}]"


def decode_clip(task: dict, sampling, count: int, root: str, filesystem: Any = None) -> dict:
    """Every grid window of one clip (``count`` evenly spread ones if > 0), decoded once.

    Returns a record: task fields, ``n_windows``, ``starts`` (W,), ``frame_times`` (W, F), ``frame_index``
    (W, F) into ``frames`` (N, 3, H, W) float32 unique frames, ``mel`` (W, 1, bins, T); or, for a bad clip,
    ``n_windows`` = 0 with ``skip_reason``/``skip_detail`` set.
    """

    f_count = sampling.num_frames
    entry = ClipEntry(
        _str(task["path"]),
        _str(task["clip"]),
        _str(task["class_dir"]),
        "",
        _span(task["span_start"]),
        _span(task["span_end"]),
    )
    base = {
        **{k: task[k] for k in ("split", "clip", "path", "class_dir", "shard", "order")},
        "entry_id": entry_id(entry.name, entry.start, entry.end),
    }
    try:
        with open_file(root, entry.path, filesystem) as src:
            info = probe(src, sampling)
            offset, duration = entry_span(entry, info)
            check_long_enough(duration, sampling)
            starts = [float(s) for s in offset + grid_window_starts(duration, sampling, count)]
            decoded = decode_windows(src, starts, sampling, info)
            frames: list[np.ndarray] = []
            by_time: dict[float, list[int]] = defaultdict(list)  # pts -> indices of distinct frames at it
            index = np.zeros((len(starts), f_count), dtype=np.int32)
            times = np.zeros((len(starts), f_count), dtype=np.float64)
            mels = []
            for wi, start in enumerate(decoded.starts):
                win = window_from_decoded(decoded, start, sampling)
                times[wi] = win.frame_times
                mels.append(win.mel)
                for k, t in enumerate(win.frame_times.tolist()):
                    frame = win.frames[:, k]
                    # the same native frame gives the same pixels; compare anyway rather than trust the pts
                    hit = next((j for j in by_time[t] if np.array_equal(frames[j], frame)), None)
                    if hit is None:
                        hit = len(frames)
                        frames.append(np.ascontiguousarray(frame))
                        by_time[t].append(hit)
                    index[wi, k] = hit
    except BadClipError as e:
        return {**base, **_empty_decoded(sampling), "skip_reason": e.reason.value, "skip_detail": e.detail}
    except FileNotFoundError as e:
        return {
            **base,
            **_empty_decoded(sampling),
            "skip_reason": SkipReason.MISSING_FILE.value,
            "skip_detail": str(e),
        }
    return {
        **base,
        "n_windows": len(starts),
        "starts": np.asarray(decoded.starts, dtype=np.float64),
        "frame_times": times,
        "frame_index": index,
        "frames": np.stack(frames).astype(np.float32, copy=False),
        "mel": np.stack(mels).astype(np.float32, copy=False),
        "skip_reason": "",
        "skip_detail": "",
    }


def _empty_decoded(sampling) -> dict:
    f, (h, w) = sampling.num_frames, sampling.image_size
    return {
        "n_windows": 0,
        "starts": np.zeros(0),
        "frame_times": np.zeros((0, f)),
        "frame_index": np.zeros((0, f), dtype=np.int32),
        "frames": np.zeros((0, 3, h, w), dtype=np.float32),
        "mel": np.zeros((0, 1, sampling.num_mel_bins, sampling.mel_target_length), dtype=np.float32),
    }


class DecodeClips:
    """Ray Data UDF (CPU): a batch of clip tasks -> a batch of decoded clip records."""

    def __init__(
        self, sampling: dict, windows_per_clip: int, root_uri: str, storage: dict | None = None
    ) -> None:

        self.sampling = SamplingConfig(**sampling)
        self.count = windows_per_clip
        if is_s3(root_uri):
            self.filesystem, self.root = Storage(**(storage or {})).filesystem(root_uri)
        else:
            self.filesystem, self.root = None, root_uri

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [
            decode_clip(task, self.sampling, self.count, self.root, self.filesystem)
            for task in batch_to_records(batch)
        ]
        return records_to_batch(records)


# ---------------------------------------------------------------------------------------------
# Encode


class EncodeWindows:
    """Ray Data UDF (actor, GPU when configured): decoded clips -> one row per window with fp16 latent
    mean/std (and their flips) and audio tokens."""

    def __init__(
        self,
        model: dict,
        layout: dict,
        dtype: str = "fp32",
        use_gpu: bool = False,
        vae_chunk_frames: int = 16,
        audio_chunk_windows: int = 16,
        num_threads: int = 0,
        storage: dict | None = None,
    ) -> None:
        import torch

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        model_cfg = localize_model_paths(from_dict(ModelConfig, model, "model"), Storage(**(storage or {})))
        self.vae, self.audio = load_frozen_encoders(model_cfg, self.device, dtype)
        self.layout = CacheLayout.from_dict(layout)
        self.vae_chunk = vae_chunk_frames
        self.audio_chunk = audio_chunk_windows

    def encode_clip(self, rec: dict) -> dict[str, np.ndarray]:
        import torch

        n = int(rec["n_windows"])
        if n == 0:
            return self._skip_marker(rec)
        with torch.no_grad():
            video = (
                torch.from_numpy(np.ascontiguousarray(rec["frames"]))
                .permute(1, 0, 2, 3)[None]
                .to(self.device)
            )
            index = torch.from_numpy(np.asarray(rec["frame_index"], dtype=np.int64)).to(self.device)

            def per_window(x: torch.Tensor) -> np.ndarray:  # (1, C, N, h, w) -> (W, C, F, h, w) fp16
                return x[0][:, index].permute(1, 0, 2, 3, 4).to(torch.float16).cpu().numpy()

            out = {}
            mean, std = encode_frames(self.vae, video, self.vae_chunk)
            out["latent_mean"], out["latent_std"] = per_window(mean), per_window(std)
            if self.layout.flips:
                mean, std = encode_frames(self.vae, video.flip(-1), self.vae_chunk)
                out["latent_mean_flip"], out["latent_std_flip"] = per_window(mean), per_window(std)
            mel = torch.from_numpy(np.ascontiguousarray(rec["mel"]))
            tokens = [self.audio.encode(m.to(self.device)) for m in mel.split(self.audio_chunk)]
            out["audio_tokens"] = torch.cat(tokens).to(torch.float16).cpu().numpy()
        start_ms = np.round(np.asarray(rec["starts"]) * 1000).astype(np.int64)
        clip, eid = _str(rec["clip"]), _str(rec["entry_id"])
        meta = {
            "window_id": np.array([f"{eid}@{ms:07d}ms" for ms in start_ms], dtype=object),
            "clip": np.array([clip] * n, dtype=object),
            "class_dir": np.array([_str(rec["class_dir"])] * n, dtype=object),
            "split": np.array([_str(rec["split"])] * n, dtype=object),
            "start": np.asarray(rec["starts"], dtype=np.float64),
            "frame_times": np.asarray(rec["frame_times"], dtype=np.float64),
            "shard": np.array([_str(rec["shard"])] * n, dtype=object),
            "order": np.full(n, int(rec["order"]), dtype=np.int64),
            "clip_windows": np.full(n, n, dtype=np.int64),
            "skip_reason": np.array([""] * n, dtype=object),
            "skip_detail": np.array([""] * n, dtype=object),
        }
        return {**meta, **out}

    def _skip_marker(self, rec: dict) -> dict[str, np.ndarray]:
        """One placeholder row carrying a bad clip's skip reason to the writer (tensors are zeros)."""
        lay = self.layout
        tensors = {
            c: np.zeros((1, *lay.latent), dtype=np.float16)
            for c in LATENT_COLUMNS + (FLIP_COLUMNS if lay.flips else ())
        }
        tensors["audio_tokens"] = np.zeros((1, *lay.audio), dtype=np.float16)
        meta = {
            "window_id": "",
            "clip": _str(rec["clip"]),
            "class_dir": _str(rec["class_dir"]),
            "split": _str(rec["split"]),
            "shard": _str(rec["shard"]),
            "skip_reason": _str(rec["skip_reason"]),
            "skip_detail": _str(rec["skip_detail"]),
        }
        out = {k: np.array([v], dtype=object) for k, v in meta.items()}
        out.update(
            start=np.zeros(1),
            frame_times=np.zeros((1, lay.num_frames)),
            order=np.array([int(rec["order"])]),
            clip_windows=np.zeros(1, dtype=np.int64),
        )
        return {**out, **tensors}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return concat_batches([self.encode_clip(rec) for rec in batch_to_records(batch)])


# ---------------------------------------------------------------------------------------------
# Shards


class ShardAssembler:
    """Collects window rows by shard; a shard is complete once every one of its entries (identified by their
    ``order`` in the shard) has delivered all its windows or its skip marker. Rows of a completed shard are
    sorted (entry order, start), so a shard's content does not depend on the order work finished in."""

    def __init__(self, plan: dict[str, list[str]], split_of: dict[str, str], cache_id: str) -> None:
        self.plan = plan
        self.split_of = split_of
        self.cache_id = cache_id
        self.parts: dict[str, list[dict]] = defaultdict(list)
        self.seen: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.expected: dict[str, dict[int, int]] = defaultdict(dict)
        self.skipped: dict[str, dict[int, dict]] = defaultdict(dict)
        self.class_of: dict[str, dict[int, str]] = defaultdict(dict)

    def add(self, batch: dict[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray], dict]]:
        """Add rows; returns ``(shard, columns, meta)`` for every shard this batch completed."""
        if not batch or not len(batch["shard"]):
            return []
        shards = np.array([_str(s) for s in batch["shard"]], dtype=object)
        touched = []
        for shard in dict.fromkeys(shards.tolist()):
            if shard not in self.plan:
                raise ValueError(f"row for unknown shard {shard!r}")
            rows = {k: v[shards == shard] for k, v in batch.items()}
            for i, order in enumerate(rows["order"].tolist()):
                self.class_of[shard][order] = _str(rows["class_dir"][i])
                if _str(rows["skip_reason"][i]):
                    self.skipped[shard][order] = {
                        "path": _str(rows["clip"][i]),
                        "reason": _str(rows["skip_reason"][i]),
                        "detail": _str(rows["skip_detail"][i]),
                    }
                    self.expected[shard][order] = 0
                else:
                    self.seen[shard][order] += 1
                    self.expected[shard][order] = int(rows["clip_windows"][i])
            ok = np.array([not _str(r) for r in rows["skip_reason"]], dtype=bool)
            if ok.any():
                self.parts[shard].append({k: v[ok] for k, v in rows.items()})
            touched.append(shard)
        return [self._complete(s) for s in touched if self._is_complete(s)]

    def _is_complete(self, shard: str) -> bool:
        exp, seen = self.expected[shard], self.seen[shard]
        return all(o in exp and seen.get(o, 0) >= exp[o] for o in range(len(self.plan[shard])))

    def _complete(self, shard: str) -> tuple[str, dict[str, np.ndarray], dict]:
        cols = concat_batches(self.parts.pop(shard, []))
        if cols:
            order = np.lexsort((cols["start"], cols["order"]))
            cols = {k: v[order] for k, v in cols.items() if k not in PIPELINE_COLUMNS}
        skipped_by_order = self.skipped.pop(shard, {})
        classes = self.class_of.pop(shard, {})
        per_class: dict[str, int] = defaultdict(int)
        clips_per_class: dict[str, int] = defaultdict(int)
        for c in cols.get("class_dir", []):
            per_class[_str(c)] += 1
        for o in range(len(self.plan[shard])):
            if o not in skipped_by_order:
                clips_per_class[classes[o]] += 1
        clips = self.plan[shard]
        meta = {
            "cache_id": self.cache_id,
            "shard": shard,
            "split": self.split_of[shard],
            "clips": list(clips),
            "rows": int(len(cols.get("window_id", []))),
            "clips_ok": len(clips) - len(skipped_by_order),
            "per_class": dict(sorted(per_class.items())),
            "clips_per_class": dict(sorted(clips_per_class.items())),
            "skipped": [skipped_by_order[o] for o in sorted(skipped_by_order)],
        }
        self.seen.pop(shard, None)
        self.expected.pop(shard, None)
        return shard, cols, meta

    def pending(self) -> list[str]:
        return sorted(set(self.parts) | set(self.expected))


class ShardWriter:
    """Ray Data UDF (one actor): rows -> complete shards written atomically; yields a summary row per shard.

    Must run with concurrency 1: every row of a shard has to reach the same assembler."""

    def __init__(
        self,
        cache_uri: str,
        cache_id: str,
        layout: dict,
        plan: dict[str, list[str]],
        split_of: dict[str, str],
        storage: dict | None = None,
    ) -> None:

        self.storage = Storage(**(storage or {}))
        self.cache_uri = cache_uri
        self.layout = CacheLayout.from_dict(layout)
        self.assembler = ShardAssembler(plan, split_of, cache_id)
        self.lock = threading.Lock()  # in case the actor runs batches concurrently

    def write(self, shard: str, cols: dict[str, np.ndarray], meta: dict) -> int:

        data = table_bytes(build_shard_table(self.layout, cols, meta))
        self.storage.write_bytes(join(self.cache_uri, shard), data)  # one PUT: whole object or nothing
        return len(data)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            done = self.assembler.add(batch)
            summaries = []
            for shard, cols, meta in done:
                nbytes = self.write(shard, cols, meta)
                summaries.append(
                    {"shard": shard, "bytes": nbytes, "meta": json.dumps({**meta, "bytes": nbytes})}
                )
        if not summaries:
            return {
                "shard": np.array([], dtype=object),
                "bytes": np.array([], dtype=np.int64),
                "meta": np.array([], dtype=object),
            }
        return records_to_batch(summaries)
