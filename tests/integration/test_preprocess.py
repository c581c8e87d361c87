"""The preprocessing job end to end on real parts: a synthetic AVSync15 (2 clips per class, one of them
corrupted) and tiny real-format weights on the moto S3 server, a real local Ray, a real MLflow server.

Checks the issue's "done when": manifest counts = clips x windows x flips minus skipped; a cached row equals
the same window encoded directly (to fp16 rounding: it was encoded in another process); a second run writes
nothing; a deleted shard is restored exactly; the corrupt clip is in the manifest with its reason. Bad input
fails in one line before Ray starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from asva_model.config import ModelConfig
from asva_model.data.sampling import grid_window_starts, probe_duration, sample_clip, sample_grid_windows
from asva_model.objective import encode_frames
from asva_platform import config as cfgmod
from asva_platform.artifacts.cache import open_cache, shard_name
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.errors import run_guarded
from asva_platform.experiment import load_experiment
from asva_platform.inference.weights import load_frozen_encoders, localize_model_paths
from asva_platform.storage import Storage, join, parse_uri
from asva_platform.training.data import collate_training_batch
from jobs.preprocess import main
from tests.output import own_lines

pytestmark = pytest.mark.integration

WINDOWS = 2


@pytest.fixture(scope="module")
def job(s3_server, tmp_path_factory):
    """Dataset and weights uploaded to S3, one clip overwritten by garbage; returns (work dir, config, overrides,
    corrupt clip)."""
    work = tmp_path_factory.mktemp("preprocess")
    _, overrides = tiny_inputs(work, clips_per_class=2, max_duration=3.0)
    storage = Storage()
    prefix = f"s3://{s3_server.bucket}/datasets/{work.name}"
    storage.upload_dir(work / "data", prefix)
    corrupt = (work / "data" / "train.txt").read_text().split()[3]
    storage.write_bytes(join(prefix, "videos", corrupt), b"\x00\x00\x00\x18ftypmp42 truncated garbage")
    weights = f"s3://{s3_server.bucket}/weights/{work.name}"
    storage.upload_dir(work / "weights", weights)
    config = work / "preprocess.yaml"
    config.write_text("name: preprocess-test\n")
    local_paths = (
        "dataset.root=",
        "model.pretrained_sd=",
        "model.audio_encoder_weights=",
        "model.text_encodings=",
    )
    overrides = [o for o in overrides if not o.startswith(local_paths)] + [
        f"dataset.root={prefix}",
        f"model.pretrained_sd={weights}/sd",
        f"model.audio_encoder_weights={weights}/imagebind_audio.pth",
        f"model.text_encodings={weights}/text_encodings.pt",
        f"storage.root=s3://{s3_server.bucket}/pp-{work.name}",
        f"preprocess.windows_per_clip={WINDOWS}",
        "preprocess.clips_per_shard=4",
    ]
    return work, config, overrides, corrupt


def run_job(capsys, job, *extra) -> dict:
    _, config, overrides, _ = job
    rc = run_guarded(main, ["--config", str(config), "--json", *overrides, *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    lines = captured.out.strip().splitlines()
    assert lines[-2].startswith("preprocess: cache ")  # the summary line, then the JSON
    return json.loads(lines[-1])


def snapshot(storage: Storage, uri: str) -> dict:
    """Every object under ``uri`` with its ETag and modification time."""
    u = parse_uri(uri)
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=u.bucket, Prefix=u.key + "/")
    return {o["Key"]: (o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", [])}


def test_preprocess_job_on_s3_ray_and_mlflow(job, ray_cluster, mlflow_server, capsys):
    work, config, overrides, corrupt = job
    cfg = load_experiment(str(config), overrides)
    storage = Storage.from_config(cfg.storage)

    first = run_job(capsys, job)
    print(f"first run {first['seconds']:.1f} s, pipeline {first['pipeline_seconds']:.1f} s")
    assert first["noop"] is False and first["cache_uri"] == join(cfg.storage.cache_root, first["cache_id"])

    # --- counts: every listed clip x its windows x 2 flips, minus the corrupt one
    listed = [
        (split, name)
        for split in ("train", "test")
        for name in (work / "data" / f"{split}.txt").read_text().split()
    ]
    expected = {
        name: len(
            grid_window_starts(
                probe_duration(str(work / "data" / "videos" / name), cfg.sampling), cfg.sampling, WINDOWS
            )
        )
        for _, name in listed
        if name != corrupt
    }
    assert first["clips"] == len(listed) - 1 == 29
    assert first["windows"] == first["rows"] == sum(expected.values())
    assert first["samples"] == 2 * sum(expected.values())
    assert [(s["path"], s["reason"]) for s in first["skipped"]] == [(corrupt, "corrupt_video")]

    handle = open_cache(storage, first["cache_id"], cfg.storage.cache_root)
    m = handle.manifest
    assert m.totals.rows == first["rows"] and m.totals.skipped == 1
    assert m.splits["train"].skipped[0]["path"] == corrupt
    assert m.splits["train"].skipped[0]["reason"] == "corrupt_video"
    for split in ("train", "test"):
        per_class: dict[str, int] = {}
        for s, name in listed:
            if s == split and name != corrupt:
                per_class[name.split("/")[0]] = per_class.get(name.split("/")[0], 0) + expected[name]
        assert m.splits[split].per_class == per_class
    rows = [r for split in ("train", "test") for r in handle.iter_rows(split)]
    assert len({r["window_id"] for r in rows}) == len(rows) == first["rows"]

    # --- training reads it with Ray Data, in the shapes the objective takes
    ds = handle.ray_dataset("train")
    assert ds.count() == m.splits["train"].rows
    batch = next(iter(ds.iter_batches(batch_size=4, batch_format="numpy")))
    out = collate_training_batch(
        batch, handle.text_encodings(), handle.null_audio_tokens(), np.random.default_rng(0)
    )
    assert out["mean"].shape == (4, 4, 12, 32, 32) and out["audio_tokens"].shape == (4, 229, 32)
    assert out["text"].shape == (4, 77, 32) and out["null_audio_tokens"].shape == (1, 229, 32)

    # --- a cached row equals the same window encoded directly: what is copied (frame times, shapes, dtypes)
    # exactly; what the encoders compute (VAE latents, audio tokens) to fp16 rounding. The cache was computed in
    # a Ray actor, the reference here: CPU kernels sum in an order that depends on the thread count and the batch
    # (measured on this 2-core box: the last fp16 bit of a few audio-token values differs), so bit-exactness
    # across processes is not a property of the code. Both sides use 1 thread (encode_num_cpus=1) and the
    # clip's windows as one audio batch, as the actor does, which keeps the differences at that last bit.
    row = next(r for r in handle.iter_rows("train") if r["start"] > 0)
    local = str(work / "data" / "videos" / str(row["clip"]))
    model_cfg = localize_model_paths(
        cfgmod.from_dict(ModelConfig, cfgmod.to_dict(cfg.model), "model"), storage
    )
    vae, audio = load_frozen_encoders(model_cfg)
    fp16 = dict(
        rtol=2e-3, atol=2e-3
    )  # about two fp16 steps (2**-10 relative): rounding, not a different input
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for flip, suffix in ((False, ""), (True, "_flip")):
            single = sample_clip(local, float(row["start"]), cfg.sampling, flip=flip)
            np.testing.assert_array_equal(
                row["frame_times"], single.frame_times
            )  # decoded timestamps, copied
            mean, std = encode_frames(vae, torch.from_numpy(single.frames)[None])
            for key, direct in ((f"latent_mean{suffix}", mean[0]), (f"latent_std{suffix}", std[0])):
                cached = row[key]
                assert cached.dtype == np.float16 and cached.shape == tuple(direct.shape), key
                np.testing.assert_allclose(
                    cached.astype(np.float32), direct.half().float().numpy(), **fp16, err_msg=key
                )
        windows = sample_grid_windows(local, cfg.sampling, WINDOWS)
        with torch.no_grad():
            tokens = audio.encode(torch.from_numpy(np.stack([w.mel for w in windows])))
        k = [w.start for w in windows].index(row["start"])
        assert row["audio_tokens"].dtype == np.float16 and row["audio_tokens"].shape == tuple(tokens[k].shape)
        np.testing.assert_allclose(
            row["audio_tokens"].astype(np.float32), tokens[k].half().float().numpy(), **fp16
        )
    finally:
        torch.set_num_threads(threads)

    # --- the MLflow run: experiment `preprocess`, config params, counts, cache tags
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("preprocess")
    runs = client.search_runs([exp.experiment_id], f"tags.`asva.cache_id` = '{first['cache_id']}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["asva.cache_uri"] == first["cache_uri"]
    assert runs[0].data.params["preprocess.windows_per_clip"] == str(WINDOWS)
    assert runs[0].data.metrics["rows"] == first["rows"] and runs[0].data.metrics["clips_per_s"] > 0

    # --- same inputs again: nothing written, and it says so
    before = snapshot(storage, first["cache_uri"])
    second = run_job(capsys, job, "preprocess.decode_concurrency=1")  # speed settings keep the cache_id
    assert second["noop"] is True and second["cache_id"] == first["cache_id"]
    assert second["rows"] == first["rows"] and second["bytes_written"] == 0
    assert snapshot(storage, first["cache_uri"]) == before

    # --- a shard deleted: the re-run restores exactly that shard, no duplicate rows
    lost = join(first["cache_uri"], shard_name("train", 1))
    original = storage.read_bytes(lost)
    storage.delete(lost)
    third = run_job(capsys, job)
    print(f"no-op run {second['seconds']:.1f} s, repair run {third['seconds']:.1f} s")
    assert (third["shards_written"], third["noop"]) == (1, False)
    assert (
        third["shards_reused"] == len(before) - 4
    )  # all shards but the lost one (minus 3 side files + manifest)
    # Exact on purpose: the repair runs the same computation as the first run (same actor code, same per-clip
    # batches, same thread count: encode_num_cpus=1 in both runs), so it must write the same bytes.
    assert storage.read_bytes(lost) == original
    after = snapshot(storage, first["cache_uri"])
    changed = sorted(k.rsplit("/", 1)[-1] for k in after if after[k] != before.get(k))
    assert changed == ["manifest.json", "part-00001.parquet"]
    again = open_cache(storage, first["cache_id"], cfg.storage.cache_root)
    rows_again = [r["window_id"] for split in ("train", "test") for r in again.iter_rows(split)]
    assert sorted(rows_again) == sorted(r["window_id"] for r in rows)


BAD_INPUT_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from asva_platform.errors import run_guarded
    from jobs.preprocess import main
    out = []
    for args in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = run_guarded(main, args)
        out.append([rc, err.getvalue()])
    print(json.dumps({"results": out, "ray_imported": "ray" in sys.modules}))
""")


def test_bad_input_fails_in_one_line_before_ray_starts(job, s3_server, mlflow_server, tmp_path):
    _, config, overrides, _ = job
    cases = [
        [f"dataset.root={tmp_path}/no-such-dataset"],
        ["storage.root=s3://no-such-bucket-asva/x"],
        ["tracking.uri=http://127.0.0.1:9", "tracking.required=true"],
        ["preprocess.windows_per_clip=-1"],
        ["model.text_encodings=" + str(tmp_path / "missing.pt")],
    ]
    args = [["--config", str(config), *overrides, f"tracking.uri={mlflow_server.uri}", *c] for c in cases]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}  # the tracking case must use tracking.uri
    proc = subprocess.run(
        [sys.executable, "-c", BAD_INPUT_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.getcwd(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ray_imported"] is False  # no Ray resources were taken
    messages = []
    for rc, err in report["results"]:
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        messages.append(lines[0])
    assert "no-such-dataset: directory not found" in messages[0]
    assert "no-such-bucket-asva" in messages[1]
    assert "cannot reach MLflow tracking server at http://127.0.0.1:9" in messages[2]
    assert "preprocess.windows_per_clip: must be >= 0" in messages[3]
    assert messages[4].startswith("error: model: ") and "missing.pt" in messages[4]


def test_a_local_ray_too_small_for_the_actors_fails_in_one_line(job, ray_cluster, mlflow_server, capsys):
    _, config, overrides, _ = job
    rc = run_guarded(
        main,
        [
            "--config",
            str(config),
            *overrides,
            "preprocess.windows_per_clip=1",
            "preprocess.decode_concurrency=8",
        ],
    )
    err = own_lines(capsys.readouterr().err)
    assert rc == 2 and err[-1].startswith("error: preprocess needs 9.25 CPU (cluster has 4)"), err[-3:]
