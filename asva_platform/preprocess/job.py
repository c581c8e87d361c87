"""The preprocessing job: AVSync15 -> latent cache on object storage (``python -m jobs.preprocess``).

Order of work, so that bad input costs nothing and nothing is ever half-visible:

1. preflight, before Ray: config, storage and tracking reachability, dataset lists, model weights (loaded
   once on the driver for their fingerprints, the null-audio tokens and the row shapes), text encodings;
2. identity: ``cache_id``; a cache whose manifest exists is complete -> nothing to do (and we say so);
3. resume: shards already written (footer names this cache and shard) are kept; only missing ones are
   built, by a streaming Ray Data pipeline (decode -> encode -> shard writer), each shard one atomic write;
4. ``manifest.json`` last, then the MLflow run (experiment ``preprocess``) gets counts and throughput.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from asva_model.config import ModelConfig
from asva_model.text import load_text_encodings
from asva_platform import config as cfgmod
from asva_platform.artifacts import cache as fmt
from asva_platform.artifacts.weights import (
    absolute_model_paths,
    latent_downsample,
    load_frozen_encoders,
    localize_model_paths,
    state_fingerprint,
)
from asva_platform.cluster import init_ray
from asva_platform.datasets import dataset_access
from asva_platform.errors import UserError
from asva_platform.preprocess.plan import (
    CODE_VERSION,
    ShardPlan,
    arrays_fingerprint,
    build_identity,
    compute_cache_id,
    dataset_identity,
    plan_shards,
    read_listings,
)
from asva_platform.preprocess.stages import DecodeClips, EncodeWindows, ShardWriter, records_to_batch
from asva_platform.progress import Progress
from asva_platform.storage import Storage, is_s3, join
from asva_platform.tracking import (
    TAG_CACHE_ID,
    TAG_CACHE_URI,
    TAG_NOOP,
    resolve_tracking_uri,
    run_status,
    start_run,
)

EXPERIMENT = "preprocess"
WRITER_NUM_CPUS = 0.25
"""The shard writer mostly waits on rows and object writes."""
GB = 1024**3


@dataclass
class Prepared:
    """Everything decided on the driver before Ray starts."""

    cfg: Any
    storage: Storage
    dataset_root: str
    """The dataset root as the stages open it: local path, or `bucket/prefix` inside ``filesystem``."""
    filesystem: Any
    listings: dict
    model: dict
    """The model section as a plain dict, for the encoder actors (which copy s3:// weights to their node)."""
    layout: fmt.CacheLayout
    text: dict[str, np.ndarray]
    null_audio: np.ndarray
    identity: dict
    cache_id: str
    cache_uri: str
    shards: list[ShardPlan]

    @property
    def manifest_uri(self) -> str:
        return join(self.cache_uri, fmt.MANIFEST)

    @property
    def num_clips(self) -> int:
        return sum(len(s.tasks) for s in self.shards)


@dataclass
class Result:
    cache_uri: str
    cache_id: str
    clips: int
    """Clips with at least one cached window (all splits)."""
    windows: int
    """Cached 2 s windows; one row each (both flips live in the row)."""
    rows: int
    samples: int
    """Training samples the cache offers: windows x flip variants."""
    skipped: list[dict]
    """Every list entry or clip left out: {path, reason, detail, split}."""
    seconds: float
    noop: bool = False
    shards_written: int = 0
    shards_reused: int = 0
    bytes_written: int = 0
    clips_processed: int = 0
    """Clips decoded and encoded by this run (0 for a no-op; fewer than ``clips`` when resuming)."""
    pipeline_seconds: float = 0.0
    mlflow_run_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def clips_per_s(self) -> float:
        return self.clips_processed / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["clips_per_s"] = round(self.clips_per_s, 4)
        out["seconds"] = round(self.seconds, 3)
        out["pipeline_seconds"] = round(self.pipeline_seconds, 3)
        return out

    def summary_line(self) -> str:
        verb = "already complete, nothing to do" if self.noop else (
            f"wrote {self.shards_written} shard(s), reused {self.shards_reused}")
        return (f"preprocess: cache {self.cache_id} at {self.cache_uri}: {verb}; clips {self.clips}, "
                f"windows {self.windows}, rows {self.rows}, skipped {len(self.skipped)}, "
                f"bytes written {self.bytes_written} ({self.bytes_written / 2**20:.1f} MiB), "
                f"clips/s {self.clips_per_s:.2f}, {self.seconds:.1f} s")


# ---------------------------------------------------------------------------------------------
# Preflight (no Ray)


def _user_error(what: str, err: BaseException) -> UserError:
    return UserError(f"{what}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def prepare(cfg, storage: Storage, log: Callable[[str], None] = print) -> Prepared:
    """Check every input and decide the cache identity and shards; raises UserError/StorageError (one line)."""
    import torch


    p = cfg.preprocess
    root, fs = dataset_access(cfg.dataset, storage)
    dataset_cfg = dataclasses.replace(cfg.dataset, root=root)
    try:
        listings = read_listings(dataset_cfg, p.splits, fs)
        dataset = dataset_identity(dataset_cfg, cfg.dataset.root, p.splits, fs)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise _user_error("dataset", err) from None
    if not any(listing.entries for listing in listings.values()):
        raise UserError(f"dataset {cfg.dataset.root}: no usable clips in split(s) {', '.join(p.splits)}")

    model_cfg = absolute_model_paths(cfgmod.from_dict(ModelConfig, cfgmod.to_dict(cfg.model), "model"))
    model_for_actors = cfgmod.to_dict(model_cfg)  # s3:// paths stay remote: each actor copies them to its node
    if not model_cfg.text_encodings:
        raise UserError("model.text_encodings: required (the cache stores each class prompt's encoding)")
    try:
        model_cfg = localize_model_paths(model_cfg, storage)
        vae, audio = load_frozen_encoders(model_cfg)
        text_table = load_text_encodings(model_cfg.text_encodings, model_cfg.unet.cross_attention_dim)
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:
        raise _user_error("model", err) from None
    s = cfg.sampling
    if tuple(audio.mel_shape) != (s.num_mel_bins, s.mel_target_length):
        raise UserError(f"sampling: mel is {s.num_mel_bins}x{s.mel_target_length} but the audio encoder expects "
                        f"{audio.mel_shape[0]}x{audio.mel_shape[1]}")
    if not model_cfg.pretrained_sd or not model_cfg.audio_encoder_weights:
        log("warning: model.pretrained_sd / audio_encoder_weights not set: random-init encoders (seed 0)")

    prompts = {e.class_dir: e.prompt for listing in listings.values() for e in listing.entries}
    try:
        text = {c: text_table.get(prompts[c]).numpy().astype(np.float32) for c in sorted(prompts)}
    except KeyError as err:
        raise UserError(f"model.text_encodings: {err.args[0]}") from None
    ds = latent_downsample(vae)
    h, w = s.image_size
    if h % ds or w % ds:
        raise UserError(f"sampling.image_size {s.image_size}: not divisible by the VAE's downsampling {ds}")
    layout = fmt.CacheLayout((vae.config.latent_channels, s.num_frames, h // ds, w // ds),
                             (audio.num_tokens, audio.token_dim), s.num_frames, p.flips)
    with torch.no_grad():
        null_audio = audio.null_audio_tokens()[0].float().cpu().numpy()
    identity = build_identity(dataset=dataset, sampling_cfg=s, preprocess_cfg=p,
                              vae_fingerprint=state_fingerprint(vae), audio_fingerprint=state_fingerprint(audio),
                              text_fingerprint=arrays_fingerprint(text))
    cache_id = compute_cache_id(identity)
    return Prepared(cfg, storage, root, fs, listings, model_for_actors, layout, text, null_audio, identity,
                    cache_id, join(cfg.storage.cache_root, cache_id), plan_shards(listings, p.clips_per_shard))


# ---------------------------------------------------------------------------------------------
# Resume


def object_sizes(storage: Storage, uri: str) -> dict[str, int]:
    """Size of every object under prefix ``uri``, keyed by path relative to it (one listing call)."""
    import pyarrow.fs as pafs

    fs, base = storage.filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return {}
    return {i.path[len(base):].lstrip("/"): int(i.size or 0) for i in infos if i.type == pafs.FileType.File}


def damaged_parts(prep: Prepared, manifest: dict) -> list[str]:
    """Files a complete cache's manifest promises that are missing or have another size (deleted or replaced
    after the build). Empty = the cache is intact."""
    sizes = object_sizes(prep.storage, prep.cache_uri)
    bad = [sh["path"] for split in manifest["splits"].values() for sh in split["shards"]
           if sizes.get(sh["path"]) != sh["bytes"]]
    return bad + [f for f in (fmt.TEXT_FILE, fmt.NULL_AUDIO_FILE) if f not in sizes]


def existing_shards(prep: Prepared) -> dict[str, dict]:
    """Shards already written by this cache: name -> footer metadata. A shard counts only if its footer
    names this cache_id, this shard and the same clips (anything else is rebuilt)."""
    present = set(prep.storage.list(join(prep.cache_uri, fmt.SHARDS_DIR)))
    done = {}
    for shard in prep.shards:
        uri = join(prep.cache_uri, shard.name)
        if uri not in present:
            continue
        meta = fmt.read_shard_meta(prep.storage, uri)
        if meta and meta.get("cache_id") == prep.cache_id and meta.get("shard") == shard.name \
                and meta.get("clips") == shard.clips:
            done[shard.name] = meta
    return done


def write_side_files(prep: Prepared) -> int:
    """Text encodings (once per class) and null-audio tokens; written once, atomically. Returns bytes written."""
    written = 0
    for name, data in ((fmt.TEXT_FILE, fmt.npz_bytes(prep.text)), (fmt.NULL_AUDIO_FILE, fmt.npy_bytes(prep.null_audio))):
        uri = join(prep.cache_uri, name)
        if not prep.storage.exists(uri):
            prep.storage.write_bytes(uri, data)
            written += len(data)
    return written


# ---------------------------------------------------------------------------------------------
# Stage arguments (shared by the Ray pipeline and the sequential baseline)


def stage_kwargs(prep: Prepared, todo: list[ShardPlan]) -> tuple[dict, dict, dict]:
    cfg, p = prep.cfg, prep.cfg.preprocess
    storage = prep.storage.params()  # each stage rebuilds it in its own process
    decode = dict(sampling=cfgmod.to_dict(cfg.sampling), windows_per_clip=p.windows_per_clip,
                  root_uri=cfg.dataset.root if is_s3(cfg.dataset.root) else prep.dataset_root,
                  storage=storage)
    encode = dict(model=prep.model, layout=prep.layout.to_dict(), dtype=p.encode_dtype, use_gpu=p.encode_num_gpus > 0,
                  vae_chunk_frames=p.vae_chunk_frames, audio_chunk_windows=p.audio_chunk_windows,
                  num_threads=max(1, int(p.encode_num_cpus)), storage=storage)
    write = dict(cache_uri=prep.cache_uri, cache_id=prep.cache_id, layout=prep.layout.to_dict(),
                 plan={s.name: s.clips for s in todo}, split_of={s.name: s.split for s in todo},
                 storage=storage)
    return decode, encode, write


def check_cluster_resources(prep: Prepared) -> None:
    """Fail with one line (instead of waiting forever for actors) when a local Ray is too small."""
    import ray

    p = prep.cfg.preprocess
    need_cpu = p.decode_concurrency * p.decode_num_cpus + p.encode_concurrency * p.encode_num_cpus + WRITER_NUM_CPUS
    need_gpu = p.encode_concurrency * p.encode_num_gpus
    have = ray.cluster_resources()
    short = []
    if have.get("CPU", 0) + 1e-9 < need_cpu:
        short.append(f"{need_cpu:g} CPUs (cluster has {have.get('CPU', 0):g})")
    if have.get("GPU", 0) + 1e-9 < need_gpu:
        short.append(f"{need_gpu:g} GPUs (cluster has {have.get('GPU', 0):g})")
    if not short:
        return
    msg = (f"preprocess needs {' and '.join(short)}: lower preprocess.decode_concurrency/encode_concurrency, "
           f"*_num_cpus or encode_num_gpus")
    if prep.cfg.cluster.address or os.environ.get("RAY_ADDRESS"):
        print(f"warning: {msg} (waiting for the autoscaler, if any)")
    else:
        raise UserError(msg)


def run_ray_pipeline(prep: Prepared, todo: list[ShardPlan]) -> list[dict]:
    """Build the ``todo`` shards with Ray Data (streaming); returns each written shard's metadata."""
    import ray.data
    from ray.data import ActorPoolStrategy

    p = prep.cfg.preprocess
    decode, encode, write = stage_kwargs(prep, todo)
    tasks = [t for s in todo for t in s.tasks]
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))  # one clip per block: decode parallelism
    ds = ds.map_batches(DecodeClips, fn_constructor_kwargs=decode, batch_format="numpy",
                        batch_size=p.decode_batch_size, compute=ActorPoolStrategy(size=p.decode_concurrency),
                        num_cpus=p.decode_num_cpus, memory=p.decode_memory_gb * GB)
    ds = ds.map_batches(EncodeWindows, fn_constructor_kwargs=encode, batch_format="numpy",
                        batch_size=p.batch_size, compute=ActorPoolStrategy(size=p.encode_concurrency),
                        num_cpus=p.encode_num_cpus,
                        num_gpus=p.encode_num_gpus or None, memory=p.encode_memory_gb * GB)
    ds = ds.map_batches(ShardWriter, fn_constructor_kwargs=write, batch_format="numpy", batch_size=None,
                        compute=ActorPoolStrategy(size=1), num_cpus=WRITER_NUM_CPUS, memory=p.write_memory_gb * GB)
    clips_in = {s.name: len(s.tasks) for s in todo}
    metas, progress, done = [], Progress("clip", len(tasks)), 0
    for row in ds.iter_rows():  # tiny summary rows only, one per written shard
        metas.append(json.loads(row["meta"]))
        done += clips_in.get(metas[-1]["shard"], 0)
        print(f"preprocess: {progress.line(done)}", flush=True)  # beside Ray Data's own progress bars
    return metas


def run_sequential(prep: Prepared, todo: list[ShardPlan]) -> list[dict]:
    """The same stages called one clip at a time in this process (the benchmark's baseline)."""
    decode, encode, write = stage_kwargs(prep, todo)
    encode["num_threads"] = 0  # torch's own default threading: this one process has every core to itself
    decoder, encoder, writer = DecodeClips(**decode), EncodeWindows(**encode), ShardWriter(**write)
    metas = []
    for shard in todo:
        for task in shard.tasks:
            out = writer(encoder(decoder(records_to_batch([task]))))
            metas.extend(json.loads(m) for m in out["meta"])
    return metas


# ---------------------------------------------------------------------------------------------
# Manifest


def build_manifest(prep: Prepared, metas: dict[str, dict], sizes: dict[str, int]) -> dict:
    p = prep.cfg.preprocess
    flips = 2 if p.flips else 1
    splits = {}
    for split in p.splits:
        plan = [s for s in prep.shards if s.split == split]
        shard_rows, per_class, clips_per_class = [], {}, {}
        skipped = [{"path": s.entry, "reason": s.reason.value, "detail": s.detail, "split": split,
                    "list_file": s.list_file, "line_no": s.line_no} for s in prep.listings[split].skipped]
        for shard in plan:
            m = metas[shard.name]
            shard_rows.append({"path": shard.name, "rows": m["rows"], "clips": len(m["clips"]),
                               "clips_ok": m["clips_ok"], "bytes": sizes.get(shard.name, 0)})
            for k, v in m["per_class"].items():
                per_class[k] = per_class.get(k, 0) + v
            for k, v in m["clips_per_class"].items():
                clips_per_class[k] = clips_per_class.get(k, 0) + v
            skipped += [{**s, "split": split} for s in m["skipped"]]
        rows = sum(s["rows"] for s in shard_rows)
        splits[split] = {"shards": shard_rows, "rows": rows, "windows": rows, "samples": rows * flips,
                         "clips": sum(s["clips_ok"] for s in shard_rows), "clips_listed": sum(s["clips"] for s in shard_rows),
                         "per_class": dict(sorted(per_class.items())),
                         "clips_per_class": dict(sorted(clips_per_class.items())), "skipped": skipped,
                         "bytes": sum(s["bytes"] for s in shard_rows)}
    totals = {k: sum(s[k] for s in splits.values()) for k in ("clips", "clips_listed", "windows", "rows", "samples",
                                                               "bytes")}
    totals["skipped"] = sum(len(s["skipped"]) for s in splits.values())
    return {
        "format": fmt.FORMAT, "format_version": fmt.FORMAT_VERSION, "code_version": CODE_VERSION,
        "cache_id": prep.cache_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "layout": prep.layout.to_dict(), "columns": list(prep.layout.columns),
        "latents_scaled": False, "latent_scaling_factor": prep.cfg.model.vae.scaling_factor,
        "text_encodings": fmt.TEXT_FILE, "null_audio_tokens": fmt.NULL_AUDIO_FILE,
        "text_classes": sorted(prep.text), "splits": splits, "totals": totals, "identity": prep.identity,
        "config": {k: cfgmod.to_dict(getattr(prep.cfg, k)) for k in ("dataset", "sampling", "model", "preprocess")},
    }


def shard_sizes(prep: Prepared) -> dict[str, int]:
    fs, _ = prep.storage.filesystem(prep.cache_uri)
    paths = [prep.storage.filesystem(join(prep.cache_uri, s.name))[1] for s in prep.shards]
    return {s.name: int(i.size or 0) for s, i in zip(prep.shards, fs.get_file_info(paths))}


def result_from_manifest(cache_uri: str, manifest: dict, seconds: float, **kw: Any) -> Result:
    t = manifest["totals"]
    skipped = [{"path": s["path"], "reason": s["reason"], "detail": s["detail"], "split": s["split"]}
               for split in manifest["splits"].values() for s in split["skipped"]]
    return Result(cache_uri, manifest["cache_id"], t["clips"], t["windows"], t["rows"], t["samples"],
                            skipped, seconds, **kw)


# ---------------------------------------------------------------------------------------------
# The job


def build_cache(prep: Prepared, executor: Callable[[Prepared, list[ShardPlan]], list[dict]] = run_ray_pipeline,
                log: Callable[[str], None] = print) -> tuple[dict, Result]:
    """Write the missing shards with ``executor``, then the manifest. Returns (manifest, result)."""
    t0 = time.perf_counter()
    side_bytes = write_side_files(prep)
    done = existing_shards(prep)
    todo = [s for s in prep.shards if s.name not in done]
    if done:
        log(f"resuming cache {prep.cache_id}: {len(done)} shard(s) already written, {len(todo)} to build")
    t_pipe = time.perf_counter()
    new = executor(prep, todo) if todo else []
    pipeline_seconds = time.perf_counter() - t_pipe
    metas = {**done, **{m["shard"]: m for m in new}}
    missing = [s.name for s in prep.shards if s.name not in metas]
    if missing:
        raise RuntimeError(f"pipeline finished without writing {len(missing)} shard(s), e.g. {missing[0]}")
    manifest = build_manifest(prep, metas, shard_sizes(prep))
    prep.storage.write_json(prep.manifest_uri, manifest)  # last: marks the cache complete
    written = side_bytes + sum(m.get("bytes", 0) for m in new)
    result = result_from_manifest(prep.cache_uri, manifest, time.perf_counter() - t0, shards_written=len(new),
                                  shards_reused=len(done), bytes_written=written,
                                  clips_processed=sum(len(s.tasks) for s in todo), pipeline_seconds=pipeline_seconds)
    return manifest, result


def _start_run(tracking_uri: str, prep: Prepared) -> tuple:
    note = (f"Latent cache `{prep.cache_id}` at `{prep.cache_uri}`: train with `train.cache={prep.cache_id}`; "
            "clip, window and skipped-media counts are this run's metrics; the manifest is artifact `manifest.json`.")
    return start_run(tracking_uri, EXPERIMENT, f"preprocess-{prep.cache_id}", prep.cfg,
                     tags={TAG_CACHE_URI: prep.cache_uri, TAG_CACHE_ID: prep.cache_id}, job="preprocess",
                     description=note)


def _log_result(client, run_id: str, result: Result, manifest: dict | None) -> str:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {"clips": result.clips, "windows": result.windows, "rows": result.rows, "samples": result.samples,
              "skipped": len(result.skipped), "bytes_written": result.bytes_written, "seconds": result.seconds,
              "clips_per_s": result.clips_per_s, "shards_written": result.shards_written,
              "shards_reused": result.shards_reused, "clips_processed": result.clips_processed}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
    client.set_tag(run_id, TAG_NOOP, str(result.noop).lower())
    if manifest is not None:
        client.log_text(run_id, json.dumps(manifest, indent=2, sort_keys=True), "manifest.json")
    return run_id


def run(cfg, log: Callable[[str], None] = print) -> Result:
    """The whole job for a loaded ExperimentConfig (see the module doc)."""

    t0 = time.perf_counter()
    storage = Storage.from_config(cfg.storage)
    storage.check_reachable(cfg.storage.cache_root)
    tracking_uri = resolve_tracking_uri(cfg.tracking)
    prep = prepare(cfg, storage, log)
    log(f"cache {prep.cache_id} at {prep.cache_uri}: {prep.num_clips} clip(s) listed in {len(prep.shards)} shard(s)")

    if storage.exists(prep.manifest_uri):
        manifest = storage.read_json(prep.manifest_uri)
        damaged = damaged_parts(prep, manifest)
        if not damaged:
            result = result_from_manifest(prep.cache_uri, manifest, time.perf_counter() - t0, noop=True)
            client, run_id = _start_run(tracking_uri, prep)
            with run_status(client, run_id):
                result.mlflow_run_id = _log_result(client, run_id, result, None)
            return result
        # The manifest promises files that are gone: withdraw it (readers must not open a broken cache),
        # then rebuild exactly what is missing.
        log(f"cache {prep.cache_id}: {len(damaged)} file(s) missing or changed ({damaged[0]}...): repairing")
        storage.delete(prep.manifest_uri)

    def executor(p: Prepared, todo: list[ShardPlan]) -> list[dict]:
        init_ray(cfg.cluster)
        check_cluster_resources(p)
        return run_ray_pipeline(p, todo)

    client, run_id = _start_run(tracking_uri, prep)
    with run_status(client, run_id):
        manifest, result = build_cache(prep, executor, log)
        result.seconds = time.perf_counter() - t0
        result.mlflow_run_id = _log_result(client, run_id, result, manifest)
    return result

