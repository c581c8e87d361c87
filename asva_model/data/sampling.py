"""Clip sampling faithful to the official AVSyncD loader (asva.md §2), plus a decode-once path for caches.

One window = ``cfg.clip_duration`` seconds (2.0) starting at ``start``:

* frames: for k = 0..num_frames-1 the first decoded frame with pts >= start + k/fps (fps = 6), among
  frames with pts <= start + clip_duration + 0.5/fps; a missing one repeats the previous frame
  (``frame_picking: authors`` walks frames as the official loader does, see ``SamplingConfig``).
  Aspect-preserving centre crop to the output aspect, antialiased bilinear resize to ``image_size``,
  optional horizontal flip; float32 (3, N, H, W) in [0, 1].
* audio: mono, resampled to 16 kHz, exactly ``clip_samples`` (32,000) samples starting at ``start``,
  zero-padded at the end if the audio stops short (``audio_window``/``audio_channels``/``resampler:
  authors|sinc`` reproduce the official loader instead); ``mel`` is ImageBind's normalised log-mel
  (1, 128, 204).

``sample_clip`` decodes one window (seeking to it). ``decode_windows`` + ``window_from_decoded`` decode a
clip once and cut any number of windows from it, with the same frame-picking rule, so a cache builder
can sample every grid window of a video in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from asva_model.data.audio import waveform_to_mel, window_samples
from asva_model.data.avsync15 import ClipEntry, SplitListing, open_file
from asva_model.data.config import SamplingConfig
from asva_model.data.decode import (
    DecodedAudio,
    DecodedFrames,
    MediaInfo,
    Source,
    authors_audio_window,
    check_long_enough,
    decode_audio,
    decode_frames,
    open_container,
    probe_container,
    time_key,
)
from asva_model.data.errors import BadClipError, Skipped, SkipReason

_GRID_EPS = 1e-6  # so that e.g. 2.5 s * 6 fps = 14.999999 still counts as 15 grid steps


@dataclass
class SampledClip:
    """One sampled window."""

    frames: np.ndarray
    """float32 (3, num_frames, H, W) in [0, 1]."""
    waveform: np.ndarray
    """float32 (clip_samples,), mono at ``audio_sample_rate``."""
    mel: np.ndarray
    """float32 (1, num_mel_bins, mel_target_length), ImageBind-normalised log-mel."""
    mel_samples: int
    """``mel`` was computed from ``waveform[:mel_samples]``: ``clip_samples``, or fewer where ``audio_window:
    authors`` keeps a window whose audio ends early short (the rest of ``waveform`` is padding)."""
    frame_times: np.ndarray
    """float64 (num_frames,): pts in seconds of the native frame used for each output frame."""
    start: float
    """Window start in seconds (stream time)."""
    flipped: bool
    """Whether the frames were flipped horizontally."""

    @property
    def audio(self) -> np.ndarray:
        """The window's audio without padding (what ``mel`` was computed from): the track to write into an mp4,
        so that re-decoding it gives the protocol's mel again."""
        return self.waveform[: self.mel_samples]


# ---------------------------------------------------------------------------------------------
# Window starts (relative to the clip's span; add ``entry_span``'s offset for `clip` list entries)


def max_window_start(duration: float, cfg: SamplingConfig) -> float:
    return max(0.0, duration - cfg.clip_duration)


def snap_to_grid(t: float, cfg: SamplingConfig) -> float:
    """The grid start (multiple of 1/fps) at or before ``t``."""
    return math.floor(t * cfg.fps + _GRID_EPS) / cfg.fps


def train_window_start(duration: float, rng: Any, cfg: SamplingConfig) -> float:
    """Training: uniform in [0, duration - clip_duration] (``rng.uniform``: numpy Generator or random.Random);
    snapped down to the 1/fps grid when ``cfg.grid_aligned``."""
    start = float(rng.uniform(0.0, max_window_start(duration, cfg)))
    return snap_to_grid(start, cfg) if cfg.grid_aligned else start


def test_window_starts(duration: float, cfg: SamplingConfig) -> np.ndarray:
    """Evaluation: ``linspace(0, duration - clip_duration, test_clips_per_video)`` (head, centre, tail).
    With ``cfg.grid_aligned`` each start is rounded to the nearest grid start that still fits."""
    starts = np.linspace(0.0, max_window_start(duration, cfg), cfg.test_clips_per_video)
    if cfg.grid_aligned:
        last = snap_to_grid(max_window_start(duration, cfg), cfg)
        starts = np.minimum(np.round(starts * cfg.fps) / cfg.fps, last)
    return starts


test_window_starts.__test__ = False  # a library function, not a pytest test, when imported into tests


def grid_window_starts(duration: float, cfg: SamplingConfig, count: int = 0) -> np.ndarray:
    """Window starts on the 1/fps grid: every one that fits (count=0), or ``count`` of them evenly spread."""
    n_grid = int(math.floor(max_window_start(duration, cfg) * cfg.fps + _GRID_EPS)) + 1
    idx = np.arange(n_grid)
    if 0 < count < n_grid:
        idx = np.unique(np.round(np.linspace(0, n_grid - 1, count)).astype(int))
    return idx / cfg.fps


def entry_span(entry: ClipEntry | None, info: MediaInfo) -> tuple[float, float]:
    """(offset, duration) that windows are drawn from: the whole file, or a `clip` entry's [start, end]."""
    if entry is None or entry.start is None:
        return 0.0, info.duration
    end = info.duration if entry.end is None else min(entry.end, info.duration)
    return entry.start, max(0.0, end - entry.start)


# ---------------------------------------------------------------------------------------------
# Frame transform


def transform_frames(rgb: Sequence[np.ndarray], cfg: SamplingConfig, flip: bool = False) -> np.ndarray:
    """uint8 HxWx3 frames -> float32 (3, N, H, W) in [0, 1]: centre crop to the output aspect ratio,
    antialiased bilinear resize (torch, as torchvision's Resize on tensors), optional horizontal flip.
    Only the resize runs in torch; the rest is numpy, so a busy machine's thread pool costs one op."""
    x = np.stack(rgb)  # (N, h, w, 3)
    th, tw = cfg.image_size
    h, w = x.shape[1:3]
    if th / tw >= h / w:  # output is relatively taller: trim width
        cw = int(h / (th / tw))
        x = x[:, :, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = int(w * (th / tw))
        x = x[:, (h - ch) // 2 : (h - ch) // 2 + ch]
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255.0)  # (N, 3, h, w)
    if x.shape[-2:] != (th, tw):
        x = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=(th, tw), mode="bilinear", align_corners=False, antialias=True
        ).numpy()
    np.clip(x, 0.0, 1.0, out=x)
    if flip:
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


# ---------------------------------------------------------------------------------------------
# Probing


def probe(src: Source, cfg: SamplingConfig) -> MediaInfo:
    """Header facts of a clip (duration = min(video, audio), fps, size...); raises ``BadClipError``."""
    with open_container(src) as container:
        return probe_container(container, cfg)


def probe_duration(src: Source, cfg: SamplingConfig | None = None) -> float:
    """min(video duration, audio duration) in seconds."""
    return probe(src, cfg or SamplingConfig()).duration


def probe_entries(
    listing: SplitListing, root: str, cfg: SamplingConfig, filesystem: Any = None, full_decode: bool = False
) -> tuple[SplitListing, dict[str, MediaInfo]]:
    """Open every entry's file: returns a listing whose bad clips moved to ``skipped`` (with their typed
    reason) and the ``MediaInfo`` of each good clip by ``entry.name``. The default reads headers only
    (fast); ``full_decode`` also decodes every clip end to end, which finds truncated files that still
    open and corrupt audio/video payloads (about the cost of sampling one window per second of video)."""
    good = SplitListing(listing.split, [], list(listing.skipped))
    infos: dict[str, MediaInfo] = {}
    for entry in listing.entries:
        try:
            with open_file(root, entry.path, filesystem) as f:
                info = probe(f, cfg)
                offset, duration = entry_span(entry, info)
                check_long_enough(duration, cfg)
                if full_decode:
                    decode_windows(f, [offset, offset + max_window_start(duration, cfg)], cfg, info)
        except BadClipError as e:
            good.skipped.append(Skipped(entry.name, e.reason, e.detail))
            continue
        good.entries.append(entry)
        infos[entry.name] = info
    return good, infos


# ---------------------------------------------------------------------------------------------
# Decoding windows


@dataclass
class DecodedMedia:
    """Everything needed to cut the windows ``starts`` out of one clip without decoding again."""

    info: MediaInfo
    frames: DecodedFrames
    audio: DecodedAudio
    starts: list[float]


_AUDIO_MARGIN = 0.05  # s of context on both sides, so resampling has no edge effects inside a window


def decode_windows(
    src: Source, starts: Sequence[float], cfg: SamplingConfig, info: MediaInfo | None = None
) -> DecodedMedia:
    """Decode one clip once for all windows in ``starts`` (seconds, stream time): every frame any window
    picks, and the audio spanning all of them. Raises ``BadClipError`` (the clip's path is not known here)."""
    starts = [float(s) for s in starts]
    if not starts:
        raise ValueError("decode_windows needs at least one window start")
    with open_container(src) as container:
        info = info or probe_container(container, cfg)
        check_long_enough(info.duration, cfg)
        latest = max_window_start(info.duration, cfg) + cfg.short_clip_tolerance
        if min(starts) < 0 or max(starts) > latest + 1e-6:
            raise ValueError(
                f"window starts must lie in [0, {latest:.3f}] for a {info.duration:.3f} s clip, "
                f"got {min(starts):.3f}..{max(starts):.3f}"
            )
        frames = decode_frames(container, info, starts, cfg, cfg.short_clip_tolerance)
        t0 = max(min(starts) - _AUDIO_MARGIN, 0.0)
        audio = decode_audio(
            container,
            info,
            t0,
            max(starts) + cfg.clip_duration + _AUDIO_MARGIN,
            cfg,
            cfg.short_clip_tolerance,
        )
    return DecodedMedia(info, frames, audio, starts)


def window_from_decoded(
    decoded: DecodedMedia, start: float, cfg: SamplingConfig, flip: bool = False
) -> SampledClip:
    """Cut one window (one of ``decoded.starts``) from a decoded clip: same result as ``sample_clip``."""
    picks = decoded.frames.windows.get(time_key(start))
    if picks is None:
        raise ValueError(f"window start {start:.3f} s was not decoded (decoded: {decoded.starts})")
    if not picks:
        raise BadClipError(SkipReason.CORRUPT_VIDEO, f"no frame at or after {start:.3f} s")
    # Past the end of the stream the last frame repeats, as the official loader does.
    picks = picks + [picks[-1]] * (cfg.num_frames - len(picks))
    if cfg.audio_window == "authors":
        waveform = authors_audio_window(decoded.audio, start, cfg)
        mel_samples = len(waveform)
        mel = waveform_to_mel(waveform, cfg)  # a short window stays short: its mel is zero-padded, as theirs
        waveform = np.pad(waveform, (0, cfg.clip_samples - len(waveform)))
    else:
        waveform = window_samples(decoded.audio.samples, decoded.audio.start, start, cfg)
        mel_samples = len(waveform)
        mel = waveform_to_mel(waveform, cfg)
    return SampledClip(
        transform_frames([rgb for _, rgb in picks], cfg, flip),
        waveform,
        mel,
        mel_samples,
        np.asarray([t for t, _ in picks], dtype=np.float64),
        float(start),
        bool(flip),
    )


def sample_clip(
    src: Source, start: float, cfg: SamplingConfig, flip: bool = False, info: MediaInfo | None = None
) -> SampledClip:
    """Decode and sample the single window starting at ``start`` (seconds)."""
    return window_from_decoded(decode_windows(src, [start], cfg, info), start, cfg, flip)


def sample_windows(
    src: Source,
    starts: Sequence[float],
    cfg: SamplingConfig,
    flips: Sequence[bool] | None = None,
    info: MediaInfo | None = None,
) -> list[SampledClip]:
    """All windows ``starts`` of one clip from a single decode."""
    decoded = decode_windows(src, starts, cfg, info)
    flips = flips if flips is not None else [False] * len(decoded.starts)
    return [window_from_decoded(decoded, s, cfg, f) for s, f in zip(decoded.starts, flips)]


def sample_grid_windows(
    src: Source, cfg: SamplingConfig, count: int = 0, entry: ClipEntry | None = None, flip: bool = False
) -> list[SampledClip]:
    """Every grid-aligned window of a clip (or ``count`` evenly spread ones) from a single decode: what a
    latent-cache builder calls per video. ``entry`` restricts windows to a `clip` list entry's span."""
    with open_container(src) as container:
        info = probe_container(container, cfg)
    offset, duration = entry_span(entry, info)
    check_long_enough(duration, cfg)
    starts = offset + grid_window_starts(duration, cfg, count)
    return sample_windows(src, list(starts), cfg, [flip] * len(starts), info)
