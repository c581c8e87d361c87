"""Where training batches come from: the latent cache (Ray Data) or raw clips decoded in the loop.

Both sources yield CPU batches and turn them into the same ``asva_model.objective.LossInputs``, so the
loss is one function for both modes:

* :class:`CachedSource`: this worker's shard of the cache's ``train`` split via
  ``get_dataset_shard("train").iter_torch_batches`` (prefetching, collation in Ray Data's threads);
  latents are sampled from the stored mean/std, a random flip is picked per sample.
* :class:`OnlineSource`: decode + sample a random 2 s window per clip (the official loader's rule) in a
  thread pool, then run the frozen VAE and audio encoder on the device (what the original trainer does).

Data position on resume: the epoch is exact; inside the epoch the number of micro-batches already consumed
is skipped. Online mode replays the same clip order and windows (seeded per epoch), so the position is
exact; cached mode skips the same number of batches, but Ray Data's streaming split and block-order
shuffle do not replay the same windows (approximate).

Every rank gets the same number of batches per epoch (equal split, drop_last), which keeps DeepSpeed's
collectives in step.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from asva_model.build import build_audio_encoder
from asva_model.config import ModelConfig
from asva_model.data.avsync15 import open_file, read_split
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_model.data.errors import BadClipError
from asva_model.data.sampling import entry_span, probe, sample_clip, test_window_starts, train_window_start
from asva_model.latents import LatentScaling
from asva_model.models.audio_encoder import segment_mask
from asva_model.objective import LossInputs, prepare_cached_batch, prepare_online_batch
from asva_model.text import load_text_encodings
from asva_platform.artifacts.cache import AUDIO_COLUMN, CacheHandle
from asva_platform.datasets import dataset_access
from asva_platform.inference.weights import load_frozen_encoders
from asva_platform.storage import Storage
from asva_platform.training.spec import TrainerSpec

log = logging.getLogger(__name__)


@dataclass
class WorkerInfo:
    rank: int
    world: int
    device: torch.device


def seeded_generator(*key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from an integer tuple (e.g. seed, rank, step): reproducible across resumes."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] % (2**63)))


def audio_mask(model_cfg: ModelConfig, num_frames: int) -> torch.Tensor:
    """(1, frames, tokens) bool: the per-frame audio windows, from the encoder geometry (no weights)."""

    enc = build_audio_encoder(model_cfg, device="meta")
    return segment_mask(num_frames, *enc.patch_grid, enc.has_cls_token)[None]


def equal_share(items: list, rank: int, world: int) -> list:
    """Rank ``rank``'s interleaved share of ``items``, truncated so every rank gets the same count."""
    per_rank = len(items) // world
    return items[rank::world][:per_rank]


def _to(batch: dict, key: str, device: torch.device) -> torch.Tensor:
    return batch[key].to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# Cached mode


def cached_inputs(
    batch: dict,
    mask: torch.Tensor,
    scaling: LatentScaling,
    device: torch.device,
    generator: torch.Generator | None,
) -> LossInputs:
    """A collated cached-mode batch (latent mean and std, audio tokens, null audio tokens, text) as loss inputs
    on ``device``: the latents sampled from their stored distribution and scaled, ``mask`` the audio windows."""
    return prepare_cached_batch(
        _to(batch, "mean", device),
        _to(batch, "std", device),
        _to(batch, "audio_tokens", device),
        _to(batch, "null_audio_tokens", device),
        mask.to(device),
        _to(batch, "text", device),
        generator,
        scaling,
    )


def _flip_mask(b: int, rng: np.random.Generator | Any | None) -> np.ndarray:
    """(b,) bool, each True with probability 1/2."""
    if isinstance(rng, torch.Generator):
        return (torch.rand(b, generator=rng) < 0.5).numpy()
    rng = rng if rng is not None else np.random.default_rng()
    return rng.random(b) < 0.5


def collate_training_batch(
    batch: dict[str, np.ndarray],
    text: dict[str, np.ndarray],
    null_audio: np.ndarray,
    rng: np.random.Generator | Any | None = None,
    use_flips: bool = True,
) -> dict:
    """A batch of cache rows -> the loss inputs of ``asva_model.objective`` as fp32 torch tensors.

    ``mean``/``std`` (b, C, f, h, w) are the chosen flip's latent distribution (a random flip per sample
    when the cache holds both and ``use_flips``; ``rng`` may be a numpy or torch generator, None = fresh
    entropy); ``audio_tokens`` (b, S, D); ``null_audio_tokens`` (1, S, D); ``text`` (b, 77, D) looked up by
    class; plus ``class_dir``/``window_id`` lists and ``flipped`` (b,) bool.
    """
    b = len(batch["window_id"])
    has_flips = "latent_mean_flip" in batch
    flipped = _flip_mask(b, rng) if (has_flips and use_flips) else np.zeros(b, dtype=bool)
    sel = flipped[:, None, None, None, None]
    mean = (
        np.where(sel, batch["latent_mean_flip"], batch["latent_mean"]) if has_flips else batch["latent_mean"]
    )
    std = np.where(sel, batch["latent_std_flip"], batch["latent_std"]) if has_flips else batch["latent_std"]
    classes = [str(c) for c in batch["class_dir"]]
    missing = sorted(set(classes) - set(text))
    if missing:
        raise KeyError(f"no text encoding for class(es) {missing}")
    return {
        "mean": torch.from_numpy(np.asarray(mean, dtype=np.float32)),
        "std": torch.from_numpy(np.asarray(std, dtype=np.float32)),
        "audio_tokens": torch.from_numpy(np.asarray(batch[AUDIO_COLUMN], dtype=np.float32)),
        "null_audio_tokens": torch.from_numpy(np.asarray(null_audio, dtype=np.float32)).reshape(
            1, *np.shape(null_audio)[-2:]
        ),
        "text": torch.from_numpy(np.stack([np.asarray(text[c], dtype=np.float32) for c in classes])),
        "class_dir": classes,
        "window_id": [str(w) for w in batch["window_id"]],
        "flipped": torch.from_numpy(flipped),
    }


class _CacheCollate(NumpyBatchCollateFn):
    """Cache rows -> loss-input tensors (``collate_training_batch``), run in Ray Data's prefetch threads."""

    def __init__(self, text, null_audio, rng, use_flips: bool) -> None:
        super().__init__()
        self.text, self.null_audio, self.rng, self.use_flips = text, null_audio, rng, use_flips

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        return collate_training_batch(batch, self.text, self.null_audio, self.rng, self.use_flips)


class CachedSource:
    """Batches from the latent cache (see module doc)."""

    def __init__(
        self, spec: TrainerSpec, handle: CacheHandle, info: WorkerInfo, dataset_shard: Any = None
    ) -> None:
        self.spec = spec
        self.info = info
        self.handle = handle
        self.shard = dataset_shard
        self.text = handle.text_encodings()
        self.null_audio = handle.null_audio_tokens()
        self.mask = audio_mask(spec.model, spec.sampling.num_frames)
        self.scaling = LatentScaling.of(spec.model.vae)
        self._val_rows: list[dict] | None = None
        layout = handle.layout
        if layout.num_frames != spec.sampling.num_frames:
            raise ValueError(
                f"cache {handle.cache_id} has {layout.num_frames} frames per window, "
                f"sampling.num_frames is {spec.sampling.num_frames}"
            )

    def _collate(self, rng, use_flips: bool):
        return _CacheCollate(self.text, self.null_audio, rng, use_flips)

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        t = self.spec.train
        rng = np.random.default_rng([t.seed, self.info.rank, epoch])
        it = self.shard.iter_torch_batches(
            batch_size=t.batch_size_per_worker,
            prefetch_batches=t.prefetch_batches,
            drop_last=True,
            collate_fn=self._collate(rng, self.spec.sampling.random_flip),
            local_shuffle_buffer_size=t.local_shuffle_buffer or None,
        )
        return itertools.islice(it, skip, None)

    def to_inputs(self, batch: dict, generator: torch.Generator | None) -> LossInputs:
        return cached_inputs(batch, self.mask, self.scaling, self.info.device, generator)

    def val_inputs(self, batch: dict, generator: torch.Generator) -> LossInputs:
        return self.to_inputs(batch, generator)

    def val_items(self, share: bool = True) -> list[dict]:
        """``val_windows`` windows spread evenly over the cache's ``test`` split (so they come from many
        clips); this rank's equal share of them, or all of them with ``share=False``."""
        n = self.spec.train.val_windows
        if n == 0 or "test" not in self.handle.splits:
            return []
        if self._val_rows is None:
            total = self.handle.num_rows("test")
            picks = (
                set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist()) if total else set()
            )
            self._val_rows = [r for i, r in enumerate(self.handle.iter_rows("test")) if i in picks]
        rows = self._val_rows
        return equal_share(rows, self.info.rank, self.info.world) if share else list(rows)

    def val_batch(self, items: list[dict]) -> dict:
        return self._collate(None, use_flips=False)({k: np.stack([r[k] for r in items]) for k in items[0]})

    def text_for(self, class_dir: str, prompt: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.text[class_dir], dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Online mode


class OnlineSource:
    """Raw clips decoded in the loop, encoded by the frozen VAE/audio encoder on the device."""

    def __init__(self, spec: TrainerSpec, storage: Storage, info: WorkerInfo, model_cfg: ModelConfig) -> None:
        self.spec = spec
        self.info = info
        self.root, self.fs = dataset_access(spec.dataset, storage)
        self.entries = read_split(spec.dataset, "train", self.fs, root=self.root).entries
        if len(self.entries) < info.world * spec.train.batch_size_per_worker:
            raise ValueError(
                f"dataset {spec.dataset.root}: {len(self.entries)} training clips, fewer than "
                f"num_workers x batch_size_per_worker"
            )
        if not model_cfg.text_encodings:
            raise ValueError(
                "model.text_encodings: required for online training (the class prompt encodings)"
            )
        self.text_table = load_text_encodings(model_cfg.text_encodings, model_cfg.unet.cross_attention_dim)
        self.vae, self.audio_encoder = load_frozen_encoders(model_cfg, info.device)
        self.scaling = LatentScaling.of(model_cfg.vae)
        self.drop_path = model_cfg.audio_encoder.drop_path_in_training
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, int(spec.train.cpus_per_worker)), thread_name_prefix="asva-decode"
        )

    def _clip(self, entry, rng: np.random.Generator) -> dict:
        s = self.spec.sampling
        with open_file(self.root, entry.path, self.fs) as src:
            info = probe(src, s)
            offset, duration = entry_span(entry, info)
            start = offset + train_window_start(duration, rng, s)
            flip = bool(s.random_flip and rng.random() < 0.5)
            clip = sample_clip(src, start, s, flip, info)
        return {"frames": clip.frames, "mel": clip.mel, "text": self.text_table.get(entry.prompt).numpy()}

    def _clip_or_substitute(self, index: int, rng: np.random.Generator) -> dict:
        """A clip that fails to decode is replaced by another (seeded), so every rank keeps its batch count."""

        for _ in range(8):
            entry = self.entries[index]
            try:
                return self._clip(entry, rng)
            except BadClipError as err:
                log.warning("skipping %s: %s (using another clip)", entry.name, err)
                index = int(rng.integers(len(self.entries)))
        raise RuntimeError("8 clips in a row failed to decode; check the dataset")

    def _batch(self, indices: list[int], epoch: int) -> dict:
        t = self.spec.train
        clips = [self._clip_or_substitute(i, np.random.default_rng([t.seed, epoch, i])) for i in indices]
        return {k: torch.from_numpy(np.stack([c[k] for c in clips])) for k in ("frames", "mel", "text")}

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        t = self.spec.train
        order = np.random.default_rng([t.seed, epoch]).permutation(len(self.entries)).tolist()
        mine = equal_share(order, self.info.rank, self.info.world)
        bs = t.batch_size_per_worker
        batches = [mine[i : i + bs] for i in range(0, len(mine) - bs + 1, bs)][skip:]
        ahead: deque = deque()
        for idx in batches:  # keep prefetch_batches batches decoding in the pool
            ahead.append(self.pool.submit(self._batch, idx, epoch))
            if len(ahead) > t.prefetch_batches:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def to_inputs(self, batch: dict, generator: torch.Generator | None) -> LossInputs:
        dev = self.info.device
        return prepare_online_batch(
            self.vae,
            self.audio_encoder,
            _to(batch, "frames", dev),
            _to(batch, "mel", dev),
            _to(batch, "text", dev),
            generator,
            self.scaling,
            audio_drop_path=self.drop_path,
        )

    def val_items(self, share: bool = True) -> list:
        """Centre windows of this rank's equal share of ``val_windows`` test clips, or of all of them with
        ``share=False`` (clips that fail to decode are left out; the validator evens the counts out across
        ranks)."""
        rank, world = (self.info.rank, self.info.world) if share else (0, 1)
        return held_out_clips(
            self.spec.sampling,
            self.spec.dataset,
            self.root,
            self.fs,
            self.spec.train.val_windows,
            rank,
            world,
        )

    def val_batch(self, items: list) -> dict:
        return {
            "frames": torch.from_numpy(np.stack([c.frames for c in items])),
            "mel": torch.from_numpy(np.stack([c.mel for c in items])),
            "text": torch.stack([self.text_table.get(c.prompt) for c in items]),
        }

    def val_inputs(self, batch: dict, generator: torch.Generator) -> LossInputs:
        dev = self.info.device
        return prepare_online_batch(
            self.vae,
            self.audio_encoder,
            _to(batch, "frames", dev),
            _to(batch, "mel", dev),
            _to(batch, "text", dev),
            generator,
            self.scaling,
            audio_drop_path=False,
        )

    def text_for(self, class_dir: str, prompt: str) -> torch.Tensor:
        return self.text_table.get(prompt)


# ---------------------------------------------------------------------------------------------
# Held-out raw clips (online validation and sample videos in both modes)


@dataclass
class HeldOutClip:
    name: str
    class_dir: str
    prompt: str
    frames: np.ndarray
    """float32 (3, f, H, W) in [0, 1]."""
    mel: np.ndarray
    waveform: np.ndarray
    start: float


def held_out_clips(
    sampling: SamplingConfig,
    dataset: DatasetConfig,
    root: str,
    fs: Any,
    count: int,
    rank: int = 0,
    world: int = 1,
) -> list[HeldOutClip]:
    """The centre evaluation window of ``count`` test clips spread evenly over the test list (classes
    are listed in order, so this covers several), or of rank ``rank``'s equal share of them; clips that
    fail to decode are left out."""

    if count <= 0:
        return []
    entries = read_split(dataset, "test", fs, root=root).entries
    if not entries:
        return []
    picks = sorted({int(i) for i in np.linspace(0, len(entries) - 1, min(count, len(entries)))})
    picks = equal_share(picks, rank, world) if world > 1 else picks
    s = sampling
    out = []
    for i in picks:
        entry = entries[i]
        try:
            with open_file(root, entry.path, fs) as src:
                info = probe(src, s)
                offset, duration = entry_span(entry, info)
                starts = test_window_starts(duration, s)
                start = offset + float(starts[len(starts) // 2])
                clip = sample_clip(src, start, s, False, info)
        except BadClipError as err:
            log.warning("test clip %s unusable: %s", entry.name, err)
            continue
        out.append(
            HeldOutClip(
                entry.name, entry.class_dir, entry.prompt, clip.frames, clip.mel, clip.waveform, start
            )
        )
    return out
