"""Latent-cache format pieces without Ray: shard tables, the shard assembler, batch collation, opening."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from asva_platform.artifacts.cache import (
    MANIFEST,
    CacheError,
    CacheLayout,
    build_shard_table,
    open_cache,
    shard_meta_from_schema,
    table_bytes,
    table_to_columns,
)
from asva_platform.preprocess.stages import ShardAssembler, concat_batches
from asva_platform.storage import Storage
from asva_platform.training.data import collate_training_batch

LAYOUT = CacheLayout(latent=(4, 3, 2, 2), audio=(5, 6), num_frames=3, flips=True)


def window_rows(
    clip: str, n: int, shard: str, order: int, rng: np.random.Generator, cls: str = "dog_barking"
):
    """``n`` window rows of one clip as the encoder emits them (pipeline columns included)."""
    starts = np.arange(n) / 6.0
    rows = {
        "window_id": np.array([f"{clip}@{i}" for i in range(n)], dtype=object),
        "clip": np.array([clip] * n, dtype=object),
        "class_dir": np.array([cls] * n, dtype=object),
        "split": np.array(["train"] * n, dtype=object),
        "start": starts,
        "frame_times": starts[:, None] + np.arange(3)[None] / 6.0,
        "shard": np.array([shard] * n, dtype=object),
        "order": np.full(n, order),
        "clip_windows": np.full(n, n),
        "skip_reason": np.array([""] * n, dtype=object),
        "skip_detail": np.array([""] * n, dtype=object),
    }
    for c in ("latent_mean", "latent_std", "latent_mean_flip", "latent_std_flip"):
        rows[c] = rng.standard_normal((n, *LAYOUT.latent)).astype(np.float16)
    rows["audio_tokens"] = rng.standard_normal((n, *LAYOUT.audio)).astype(np.float16)
    return rows


def skip_marker(clip: str, shard: str, order: int, reason: str = "corrupt_video"):
    rows = window_rows(clip, 1, shard, order, np.random.default_rng(0))
    rows.update(
        window_id=np.array([""], dtype=object),
        clip_windows=np.zeros(1, dtype=np.int64),
        skip_reason=np.array([reason], dtype=object),
        skip_detail=np.array(["bad bytes"], dtype=object),
    )
    return rows


def test_shard_table_round_trip_keeps_shapes_dtypes_and_metadata():
    rng = np.random.default_rng(1)
    rows = window_rows("dog_barking/a.mp4", 3, "s", 0, rng)
    cols = {k: v for k, v in rows.items() if k in LAYOUT.columns}
    table = build_shard_table(LAYOUT, cols, {"shard": "s", "rows": 3})
    back = table_to_columns(pq.read_table(pa.BufferReader(table_bytes(table))))
    assert list(back) == list(LAYOUT.columns)
    for k in LAYOUT.columns:
        assert back[k].shape == cols[k].shape, k
        if cols[k].dtype != object:
            assert back[k].dtype == cols[k].dtype and np.array_equal(back[k], cols[k]), k
        else:
            assert back[k].tolist() == cols[k].tolist()
    assert shard_meta_from_schema(pq.read_schema(pa.BufferReader(table_bytes(table)))) == {
        "shard": "s",
        "rows": 3,
    }


def test_empty_shard_table_has_the_full_schema():
    table = build_shard_table(LAYOUT, {}, {"rows": 0})
    back = table_to_columns(pq.read_table(pa.BufferReader(table_bytes(table))))
    assert back["latent_mean"].shape == (0, *LAYOUT.latent)
    assert back["audio_tokens"].shape == (0, *LAYOUT.audio)


def test_layout_without_flips_has_no_flip_columns():
    layout = CacheLayout((4, 3, 2, 2), (5, 6), 3, flips=False)
    assert "latent_mean_flip" not in layout.columns
    assert [f.name for f in layout.schema()] == list(layout.columns)


def test_assembler_completes_a_shard_only_when_every_clip_is_in_whatever_the_order():
    rng = np.random.default_rng(2)
    plan = {"s0": ["c/a.mp4", "c/b.mp4", "c/z.mp4"], "s1": ["c/d.mp4"]}
    asm = ShardAssembler(plan, {"s0": "train", "s1": "train"}, "cid")
    a = window_rows("c/a.mp4", 4, "s0", 0, rng)
    b = window_rows("c/b.mp4", 2, "s0", 1, rng)
    d = window_rows("c/d.mp4", 1, "s1", 0, rng)
    first_half = {k: v[:2] for k, v in a.items()}
    second_half = {k: v[2:] for k, v in a.items()}
    # b and half of a arrive together with all of s1; s1 completes, s0 does not
    done = asm.add(concat_batches([b, first_half, d]))
    assert [s for s, _, _ in done] == ["s1"]
    assert asm.add(second_half) == []  # z (order 2) still missing
    done = asm.add(skip_marker("c/z.mp4", "s0", 2))
    assert len(done) == 1
    shard, cols, meta = done[0]
    assert shard == "s0" and asm.pending() == []
    # rows sorted by clip order, then start; pipeline-only columns dropped
    assert cols["clip"].tolist() == ["c/a.mp4"] * 4 + ["c/b.mp4"] * 2
    assert cols["start"].tolist() == sorted(cols["start"][:4].tolist()) + sorted(cols["start"][4:].tolist())
    assert "shard" not in cols and "skip_reason" not in cols
    assert np.array_equal(cols["latent_mean"][:4], a["latent_mean"])
    assert meta["rows"] == 6 and meta["clips_ok"] == 2 and meta["clips"] == plan["s0"]
    assert meta["per_class"] == {"dog_barking": 6} and meta["clips_per_class"] == {"dog_barking": 2}
    assert meta["skipped"] == [{"path": "c/z.mp4", "reason": "corrupt_video", "detail": "bad bytes"}]
    json.dumps(meta)  # goes into the Parquet footer and the manifest


def test_assembler_writes_an_all_skipped_shard_and_rejects_unknown_shards():
    asm = ShardAssembler({"s": ["c/x.mp4"]}, {"s": "test"}, "cid")
    [(shard, cols, meta)] = asm.add(skip_marker("c/x.mp4", "s", 0, "too_short"))
    assert cols == {} and meta["rows"] == 0 and meta["skipped"][0]["reason"] == "too_short"
    with pytest.raises(ValueError, match="unknown shard"):
        asm.add(window_rows("c/y.mp4", 1, "nope", 0, np.random.default_rng(0)))


def _batch(rng, n=6):
    rows = window_rows("dog_barking/a.mp4", n, "s", 0, rng)
    rows["class_dir"] = np.array(["dog_barking", "lions_roaring"] * (n // 2), dtype=object)
    return {k: v for k, v in rows.items() if k in LAYOUT.columns}


def test_collate_picks_one_flip_per_sample_and_shapes_match_the_objective():
    rng = np.random.default_rng(3)
    batch = _batch(rng)
    text = {"dog_barking": np.ones((7, 8), np.float32), "lions_roaring": np.zeros((7, 8), np.float32)}
    null = rng.standard_normal((5, 6)).astype(np.float32)
    out = collate_training_batch(batch, text, null, np.random.default_rng(0))
    flipped = out["flipped"].numpy()
    assert 0 < flipped.sum() < len(flipped)  # with seed 0 both flips occur in 6 samples
    for i, f in enumerate(flipped):
        src = "latent_mean_flip" if f else "latent_mean"
        assert torch.equal(out["mean"][i], torch.from_numpy(batch[src][i].astype(np.float32)))
        src = "latent_std_flip" if f else "latent_std"
        assert torch.equal(out["std"][i], torch.from_numpy(batch[src][i].astype(np.float32)))
    assert out["mean"].dtype == torch.float32 and out["mean"].shape == (6, *LAYOUT.latent)
    assert out["audio_tokens"].shape == (6, 5, 6) and out["audio_tokens"].dtype == torch.float32
    assert out["null_audio_tokens"].shape == (1, 5, 6)
    assert out["text"].shape == (6, 7, 8) and out["text"][0].sum() == 56 and out["text"][1].sum() == 0
    assert out["class_dir"][:2] == ["dog_barking", "lions_roaring"] and len(out["window_id"]) == 6
    # same seed, same flips; torch generators work too
    again = collate_training_batch(batch, text, null, np.random.default_rng(0))
    assert torch.equal(again["flipped"], out["flipped"])
    gen = collate_training_batch(batch, text, null, torch.Generator().manual_seed(0))
    assert gen["flipped"].dtype == torch.bool
    plain = collate_training_batch(batch, text, null, use_flips=False)
    assert not plain["flipped"].any() and torch.equal(
        plain["mean"], torch.from_numpy(batch["latent_mean"].astype(np.float32))
    )


def test_collate_names_a_class_without_text():
    batch = _batch(np.random.default_rng(4))
    with pytest.raises(KeyError, match="lions_roaring"):
        collate_training_batch(batch, {"dog_barking": np.zeros((7, 8))}, np.zeros((5, 6)))


def test_open_cache_refuses_a_cache_without_manifest(tmp_path):
    storage = Storage()
    (tmp_path / "caches" / "abc123").mkdir(parents=True)
    with pytest.raises(CacheError, match=r"no complete latent cache at .*abc123 \(manifest.json missing"):
        open_cache(storage, "abc123", str(tmp_path / "caches"))
    (tmp_path / "caches" / "abc123" / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CacheError, match="not a asva-latent-cache manifest"):
        open_cache(storage, str(tmp_path / "caches" / "abc123"), "unused")
