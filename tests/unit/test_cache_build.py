"""Cache building without Ray: decode-once windows, cache identity, preflight errors, and a full sequential
build (the same stage objects the Ray pipeline runs) on a tiny synthetic AVSync15 with tiny real-format weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from asva_model.data.sampling import sample_clip, sample_grid_windows
from asva_platform.artifacts import cache as fmt
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.errors import UserError
from asva_platform.experiment import load_experiment
from asva_platform.preprocess.job import build_cache, prepare, run_sequential
from asva_platform.preprocess.stages import decode_clip
from asva_platform.storage import Storage


def duration(name: str) -> float:
    return float(name.rsplit("_", 1)[1].removesuffix(".mp4"))  # synthetic names end in _<start>_<end>.mp4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 3-clip train list (+ one missing file and one corrupt clip) over a 1-clip-per-class synthetic set."""
    work = tmp_path_factory.mktemp("cache-build")
    root, overrides = tiny_inputs(work, clips_per_class=1, max_duration=4.0)
    names = {line.split("/")[0]: line for line in (work / "data" / "train.txt").read_text().split()}
    corrupt = names.pop("frog_croaking")
    (work / "data" / "videos" / corrupt).write_bytes(b"\x00not an mp4" * 100)
    good = sorted(sorted(names, key=lambda c: -duration(names[c]))[:3])  # long enough for 2+ windows
    assert duration(names[good[-1]]) > 2.5
    lines = [names[c] for c in good] + ["dog_barking/missing.mp4", corrupt]
    (work / "data" / "train.txt").write_text("\n".join(lines) + "\n")
    return work, root, overrides, {**names, "frog_croaking": corrupt}, good


def experiment(inputs, *extra):
    work, _, overrides, _, _ = inputs
    return load_experiment(
        None,
        [
            *overrides,
            f"storage.root={work}/store",
            "preprocess.splits=[train]",
            "preprocess.windows_per_clip=2",
            "preprocess.clips_per_shard=2",
            *extra,
        ],
    )


def test_decode_clip_keeps_each_frame_once_and_reproduces_every_window(inputs):
    work, root, _, names, good = inputs
    cfg = experiment(inputs)
    cls = max(good, key=lambda c: duration(names[c]))
    clip = names[cls]
    task = {
        "split": "train",
        "clip": clip,
        "path": f"videos/{clip}",
        "class_dir": cls,
        "shard": "s",
        "order": 0,
        "span_start": float("nan"),
        "span_end": float("nan"),
    }
    rec = decode_clip(task, cfg.sampling, 0, root)
    n = rec["n_windows"]
    assert n > 1 and rec["skip_reason"] == ""
    assert len(rec["frames"]) < n * cfg.sampling.num_frames  # overlapping windows share frames
    path = f"{root}/videos/{clip}"
    grid = sample_grid_windows(path, cfg.sampling)  # the data layer's decode-once windows
    assert [g.start for g in grid] == rec["starts"].tolist()
    for w in range(n):
        frames = rec["frames"][rec["frame_index"][w]].transpose(1, 0, 2, 3)
        assert np.array_equal(frames, grid[w].frames) and np.array_equal(rec["mel"][w], grid[w].mel)
        # decoding the window on its own gives the same frames bit for bit
        single = sample_clip(path, float(rec["starts"][w]), cfg.sampling)
        assert np.array_equal(frames, single.frames)
        assert np.array_equal(rec["frame_times"][w], single.frame_times)


def test_decode_clip_turns_a_corrupt_file_into_a_skip_record(inputs):
    _, root, _, names, _ = inputs
    cfg = experiment(inputs)
    clip = names["frog_croaking"]
    task = {
        "split": "train",
        "clip": clip,
        "path": f"videos/{clip}",
        "class_dir": "frog_croaking",
        "shard": "s",
        "order": 0,
        "span_start": float("nan"),
        "span_end": float("nan"),
    }
    rec = decode_clip(task, cfg.sampling, 2, root)
    assert rec["n_windows"] == 0 and rec["skip_reason"] == "corrupt_video" and rec["skip_detail"]
    assert rec["frames"].shape == (0, 3, 64, 64)


def test_cache_id_follows_content_not_speed_settings(inputs):
    work = inputs[0]
    storage = Storage()
    base = prepare(experiment(inputs), storage).cache_id
    assert prepare(experiment(inputs), storage).cache_id == base
    for speed in (
        "preprocess.decode_concurrency=5",
        "preprocess.batch_size=7",
        "preprocess.encode_memory_gb=3",
    ):
        assert prepare(experiment(inputs, speed), storage).cache_id == base, speed
    for content in (
        "preprocess.windows_per_clip=3",
        "preprocess.flips=false",
        "sampling.image_size=[32, 32]",
        "preprocess.clips_per_shard=3",
    ):
        assert prepare(experiment(inputs, content), storage).cache_id != base, content
    lst = work / "data" / "train.txt"
    saved = lst.read_text()
    try:
        lst.write_text(saved + "# a comment changes the list file\n")
        assert prepare(experiment(inputs), storage).cache_id != base
    finally:
        lst.write_text(saved)
    weights = work / "weights" / "imagebind_audio.pth"
    backup = weights.read_bytes()
    try:
        import torch

        state = torch.load(weights, weights_only=True)
        key = next(k for k in state if k.startswith("modality_trunks.audio"))
        state[key] = state[key] + 1.0
        torch.save(state, weights)
        assert prepare(experiment(inputs), storage).cache_id != base
    finally:
        weights.write_bytes(backup)


def test_preflight_errors_are_one_line_user_errors(inputs, tmp_path):
    storage = Storage()
    with pytest.raises(UserError, match=r"dataset.root .*nowhere: directory not found"):
        prepare(experiment(inputs, f"dataset.root={tmp_path}/nowhere"), storage)
    with pytest.raises(UserError, match="model.text_encodings: required"):
        prepare(experiment(inputs, "model.text_encodings="), storage)
    with pytest.raises(UserError, match="model: .*(not found|does not exist)"):
        prepare(experiment(inputs, f"model.audio_encoder_weights={tmp_path}/none.pth"), storage)
    few = tmp_path / "few.pt"
    import torch

    torch.save({"dog barking": torch.zeros(77, 32)}, few)
    with pytest.raises(UserError, match="no text encoding for prompt"):
        prepare(experiment(inputs, f"model.text_encodings={few}"), storage)
    empty = tmp_path / "empty"
    shutil.copytree(inputs[1], empty)
    (empty / "train.txt").write_text("dog_barking/missing.mp4\n")
    with pytest.raises(UserError, match="no usable clips"):
        prepare(experiment(inputs, f"dataset.root={empty}"), storage)


def test_sequential_build_writes_a_complete_cache_and_resumes_missing_shards(inputs):
    work, good = inputs[0], inputs[4]
    storage = Storage()
    prep = prepare(experiment(inputs), storage)
    manifest, result = build_cache(prep, run_sequential, log=lambda _: None)
    # 5 list lines: 3 good clips (2 windows each), 1 missing file (list check), 1 corrupt clip (decode)
    assert (result.clips, result.windows, result.rows, result.samples) == (3, 6, 6, 12)
    assert sorted((s["path"].split("/")[0], s["reason"]) for s in result.skipped) == [
        ("dog_barking", "missing_file"),
        ("frog_croaking", "corrupt_video"),
    ]
    split = manifest.splits["train"]
    assert [s.path for s in split.shards] == [fmt.shard_name("train", i) for i in range(2)]
    assert split.per_class == {c: 2 for c in good} and split.clips_per_class == {c: 1 for c in good}
    assert manifest.to_json()["layout"] == {
        "latent": [4, 12, 32, 32],
        "audio": [229, 32],
        "num_frames": 12,
        "flips": True,
    }

    handle = fmt.open_cache(storage, prep.cache_id, f"{work}/store/caches")
    rows = list(handle.iter_rows("train"))
    assert len(rows) == 6 and len({r["window_id"] for r in rows}) == 6
    assert {r["class_dir"] for r in rows} == set(good)
    assert rows[0]["latent_mean"].dtype == np.float16 and rows[0]["audio_tokens"].shape == (229, 32)
    assert not np.array_equal(rows[0]["latent_mean"], rows[0]["latent_mean_flip"])
    assert sorted(handle.text_encodings()) == sorted([*good, "frog_croaking"])  # every listed class, once
    assert handle.text_encodings()[good[0]].shape == (77, 32)
    assert handle.null_audio_tokens().shape == (229, 32)

    # a crashed build: manifest and one shard gone -> only that shard is rebuilt, identical bytes
    second = f"{prep.cache_uri}/{fmt.shard_name('train', 1)}"
    original = storage.read_bytes(second)
    storage.delete(prep.manifest_uri)
    storage.delete(second)
    manifest2, again = build_cache(prep, run_sequential, log=lambda _: None)
    assert (again.shards_written, again.shards_reused) == (1, 1)
    assert storage.read_bytes(second) == original
    assert manifest2.totals == manifest.totals
