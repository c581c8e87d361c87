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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asva_model.config import ModelConfig
from asva_model.text import load_text_encodings
from asva_platform import config as cfgmod
from asva_platform.artifacts import cache as fmt
from asva_platform.cluster import check_fits, init_ray, joined
from asva_platform.datasets import dataset_access
from asva_platform.errors import UserError
from asva_platform.experiment import ExperimentConfig
from asva_platform.inference.weights import (
    absolute_model_paths,
    latent_downsample,
    load_frozen_encoders,
    localize_model_paths,
    state_fingerprint,
)
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
    LoggedConfig,
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

    experiment: ExperimentConfig
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
        verb = (
            "already complete, nothing to do"
            if self.noop
            else (f"wrote {self.shards_written} shard(s), reused {self.shards_reused}")
        )
        return (
            f"preprocess: cache {self.cache_id} at {self.cache_uri}: {verb}; clips {self.clips}, "
            f"windows {self.windows}, rows {self.rows}, skipped {len(self.skipped)}, "
            f"bytes written {self.bytes_written} ({self.bytes_written / 2**20:.1f} MiB), "
            f"clips/s {self.clips_per_s:.2f}, {self.seconds:.1f} s"
        )


# ---------------------------------------------------------------------------------------------
# Preflight (no Ray)


def _user_error(what: str, err: BaseException) -> UserError:
    return UserError(f"{what}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def prepare(experiment: ExperimentConfig, storage: Storage, log: Callable[[str], None] = print) -> Prepared:
    """Check every input and decide the cache identity and shards; raises UserError/StorageError (one line)."""
    import torch

    p = experiment.preprocess
    root, fs = dataset_access(experiment.dataset, storage)
    try:
        listings = read_listings(experiment.dataset, p.splits, fs, root)
        dataset = dataset_identity(experiment.dataset, root, p.splits, fs)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise _user_error("dataset", err) from None
    if not any(listing.entries for listing in listings.values()):
        raise UserError(
            f"dataset {experiment.dataset.root}: no usable clips in split(s) {', '.join(p.splits)}"
        )

    model_cfg = absolute_model_paths(cfgmod.from_dict(ModelConfig, cfgmod.to_dict(experiment.model), "model"))
    model_for_actors = cfgmod.to_dict(
        model_cfg
    )  # s3:// paths stay remote: each actor copies them to its node
    if not model_cfg.text_encodings:
        raise UserError("model.text_encodings: required (the cache stores each class prompt's encoding)")
    try:
        model_cfg = localize_model_paths(model_cfg, storage)
        vae, audio = load_frozen_encoders(model_cfg)
        text_table = load_text_encodings(model_cfg.text_encodings, model_cfg.unet.cross_attention_dim)
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:
        raise _user_error("model", err) from None
    s = experiment.sampling
    if tuple(audio.mel_shape) != (s.num_mel_bins, s.mel_target_length):
        raise UserError(
            f"sampling: mel is {s.num_mel_bins}x{s.mel_target_length} but the audio encoder expects "
            f"{audio.mel_shape[0]}x{audio.mel_shape[1]}"
        )
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
    layout = fmt.CacheLayout(
        (vae.config.latent_channels, s.num_frames, h // ds, w // ds),
        (audio.num_tokens, audio.token_dim),
        s.num_frames,
        p.flips,
    )
    with torch.no_grad():
        null_audio = audio.null_audio_tokens()[0].float().cpu().numpy()
    identity = build_identity(
        dataset=dataset,
        sampling_cfg=s,
        preprocess_cfg=p,
        vae_fingerprint=state_fingerprint(vae),
        audio_fingerprint=state_fingerprint(audio),
        text_fingerprint=arrays_fingerprint(text),
    )
    cache_id = compute_cache_id(identity)
    return Prepared(
        experiment,
        storage,
        root,
        fs,
        listings,
        model_for_actors,
        layout,
        text,
        null_audio,
        identity,
        cache_id,
        join(experiment.storage.cache_root, cache_id),
        plan_shards(listings, p.clips_per_shard),
    )


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
    return {i.path[len(base) :].lstrip("/"): int(i.size or 0) for i in infos if i.type == pafs.FileType.File}


def existing_shards(prep: Prepared) -> dict[str, dict]:
    """Shards this cache already has (see :func:`asva_platform.artifacts.cache.completed_shards`)."""
    return fmt.completed_shards(
        prep.storage, prep.cache_uri, prep.cache_id, [(s.name, s.clips) for s in prep.shards]
    )


def write_side_files(prep: Prepared) -> int:
    """Text encodings (once per class) and null-audio tokens; written once, atomically. Returns bytes written."""
    written = 0
    for name, data in (
        (fmt.TEXT_FILE, fmt.npz_bytes(prep.text)),
        (fmt.NULL_AUDIO_FILE, fmt.npy_bytes(prep.null_audio)),
    ):
        uri = join(prep.cache_uri, name)
        if not prep.storage.exists(uri):
            prep.storage.write_bytes(uri, data)
            written += len(data)
    return written


# ---------------------------------------------------------------------------------------------
# Stage arguments (shared by the Ray pipeline and the sequential baseline)


def stage_kwargs(prep: Prepared, todo: list[ShardPlan]) -> tuple[dict, dict, dict]:
    experiment, p = prep.experiment, prep.experiment.preprocess
    storage = prep.storage.params()  # each stage rebuilds it in its own process
    decode = dict(
        sampling=cfgmod.to_dict(experiment.sampling),
        windows_per_clip=p.windows_per_clip,
        root_uri=experiment.dataset.root if is_s3(experiment.dataset.root) else prep.dataset_root,
        storage=storage,
    )
    encode = dict(
        model=prep.model,
        layout=prep.layout.to_dict(),
        dtype=p.encode_dtype,
        use_gpu=p.encode_num_gpus > 0,
        vae_chunk_frames=p.vae_chunk_frames,
        audio_chunk_windows=p.audio_chunk_windows,
        num_threads=max(1, int(p.encode_num_cpus)),
        storage=storage,
    )
    write = dict(
        cache_uri=prep.cache_uri,
        cache_id=prep.cache_id,
        layout=prep.layout.to_dict(),
        plan={s.name: s.clips for s in todo},
        split_of={s.name: s.split for s in todo},
        storage=storage,
    )
    return decode, encode, write


def check_cluster_resources(prep: Prepared) -> None:
    """Fail with one line (instead of waiting forever for actors) when a local Ray is too small."""
    import ray

    p = prep.experiment.preprocess
    need = {
        "CPU": p.decode_concurrency * p.decode_num_cpus
        + p.encode_concurrency * p.encode_num_cpus
        + WRITER_NUM_CPUS,
        "GPU": p.encode_concurrency * p.encode_num_gpus,
    }
    check_fits(
        "preprocess",
        need,
        ray.cluster_resources(),
        "lower preprocess.decode_concurrency/encode_concurrency, *_num_cpus or encode_num_gpus",
        may_grow=joined(prep.experiment.cluster),
    )


def run_ray_pipeline(prep: Prepared, todo: list[ShardPlan]) -> list[dict]:
    """Build the ``todo`` shards with Ray Data (streaming); returns each written shard's metadata."""
    import ray.data
    from ray.data import ActorPoolStrategy

    p = prep.experiment.preprocess
    decode, encode, write = stage_kwargs(prep, todo)
    tasks = [t for s in todo for t in s.tasks]
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))  # one clip per block: decode parallelism
    ds = ds.map_batches(
        DecodeClips,
        fn_constructor_kwargs=decode,
        batch_format="numpy",
        batch_size=p.decode_batch_size,
        compute=ActorPoolStrategy(size=p.decode_concurrency),
        num_cpus=p.decode_num_cpus,
        memory=p.decode_memory_gb * GB,
    )
    ds = ds.map_batches(
        EncodeWindows,
        fn_constructor_kwargs=encode,
        batch_format="numpy",
        batch_size=p.batch_size,
        compute=ActorPoolStrategy(size=p.encode_concurrency),
        num_cpus=p.encode_num_cpus,
        num_gpus=p.encode_num_gpus or None,
        memory=p.encode_memory_gb * GB,
    )
    ds = ds.map_batches(
        ShardWriter,
        fn_constructor_kwargs=write,
        batch_format="numpy",
        batch_size=None,
        compute=ActorPoolStrategy(size=1),
        num_cpus=WRITER_NUM_CPUS,
        memory=p.write_memory_gb * GB,
    )
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


def build_manifest(prep: Prepared, metas: dict[str, dict], sizes: dict[str, int]) -> fmt.CacheManifest:
    experiment = prep.experiment
    p = experiment.preprocess
    splits = {}
    for split in p.splits:
        listed = [
            {
                "path": s.entry,
                "reason": s.reason.value,
                "detail": s.detail,
                "split": split,
                "list_file": s.list_file,
                "line_no": s.line_no,
            }
            for s in prep.listings[split].skipped
        ]
        shards = [(s.name, len(s.tasks)) for s in prep.shards if s.split == split]
        splits[split] = fmt.summarize_split(split, shards, metas, sizes, listed, p.flips)
    return fmt.CacheManifest(
        prep.cache_id,
        prep.layout,
        splits,
        experiment.model.vae.scaling_factor,
        sorted(prep.text),
        prep.identity,
        {k: cfgmod.to_dict(getattr(experiment, k)) for k in ("dataset", "sampling", "model", "preprocess")},
        code_version=CODE_VERSION,
    )


def shard_sizes(prep: Prepared) -> dict[str, int]:
    fs, _ = prep.storage.filesystem(prep.cache_uri)
    paths = [prep.storage.filesystem(join(prep.cache_uri, s.name))[1] for s in prep.shards]
    return {s.name: int(i.size or 0) for s, i in zip(prep.shards, fs.get_file_info(paths))}


def result_from_manifest(cache_uri: str, manifest: fmt.CacheManifest, seconds: float, **kw: Any) -> Result:
    t = manifest.totals
    skipped = [
        {"path": s["path"], "reason": s["reason"], "detail": s["detail"], "split": s["split"]}
        for s in manifest.skipped
    ]
    return Result(cache_uri, manifest.cache_id, t.clips, t.windows, t.rows, t.samples, skipped, seconds, **kw)


# ---------------------------------------------------------------------------------------------
# The job


def build_cache(
    prep: Prepared,
    executor: Callable[[Prepared, list[ShardPlan]], list[dict]] = run_ray_pipeline,
    log: Callable[[str], None] = print,
) -> tuple[fmt.CacheManifest, Result]:
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
    prep.storage.write_json(prep.manifest_uri, manifest.to_json())  # last: marks the cache complete
    written = side_bytes + sum(m.get("bytes", 0) for m in new)
    result = result_from_manifest(
        prep.cache_uri,
        manifest,
        time.perf_counter() - t0,
        shards_written=len(new),
        shards_reused=len(done),
        bytes_written=written,
        clips_processed=sum(len(s.tasks) for s in todo),
        pipeline_seconds=pipeline_seconds,
    )
    return manifest, result


def _start_run(tracking_uri: str, prep: Prepared) -> tuple:
    note = (
        f"Latent cache `{prep.cache_id}` at `{prep.cache_uri}`: train with `train.cache={prep.cache_id}`; "
        "clip, window and skipped-media counts are this run's metrics; the manifest is artifact `manifest.json`."
    )
    return start_run(
        tracking_uri,
        EXPERIMENT,
        f"preprocess-{prep.cache_id}",
        LoggedConfig.of(prep.experiment),
        tags={TAG_CACHE_URI: prep.cache_uri, TAG_CACHE_ID: prep.cache_id},
        job="preprocess",
        description=note,
    )


def _log_result(client, run_id: str, result: Result, manifest: fmt.CacheManifest | None) -> str:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {
        "clips": result.clips,
        "windows": result.windows,
        "rows": result.rows,
        "samples": result.samples,
        "skipped": len(result.skipped),
        "bytes_written": result.bytes_written,
        "seconds": result.seconds,
        "clips_per_s": result.clips_per_s,
        "shards_written": result.shards_written,
        "shards_reused": result.shards_reused,
        "clips_processed": result.clips_processed,
    }
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
    client.set_tag(run_id, TAG_NOOP, str(result.noop).lower())
    if manifest is not None:
        client.log_text(run_id, json.dumps(manifest.to_json(), indent=2, sort_keys=True), "manifest.json")
    return run_id


def run(experiment: ExperimentConfig, log: Callable[[str], None] = print) -> Result:
    """The whole job for a loaded experiment config (see the module doc)."""
    t0 = time.perf_counter()
    storage = Storage.from_config(experiment.storage)
    storage.check_reachable(experiment.storage.cache_root)
    tracking_uri = resolve_tracking_uri(experiment.tracking)
    prep = prepare(experiment, storage, log)
    log(
        f"cache {prep.cache_id} at {prep.cache_uri}: {prep.num_clips} clip(s) listed in {len(prep.shards)} shard(s)"
    )

    if storage.exists(prep.manifest_uri):
        manifest = fmt.CacheManifest.from_json(storage.read_json(prep.manifest_uri), prep.manifest_uri)
        damaged = manifest.damaged_parts(object_sizes(storage, prep.cache_uri))
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
        init_ray(experiment.cluster)
        check_cluster_resources(p)
        return run_ray_pipeline(p, todo)

    client, run_id = _start_run(tracking_uri, prep)
    with run_status(client, run_id):
        manifest, result = build_cache(prep, executor, log)
        result.seconds = time.perf_counter() - t0
        result.mlflow_run_id = _log_result(client, run_id, result, manifest)
    return result
