"""Write generated clips as mp4 (H.264 yuv420p video + optional AAC audio) with PyAV; generic for any stage.

``write_video(path, frames, waveform=None, fps=6, sample_rate=16000)``: frames are uint8 (f, H, W, 3) or
float in [0, 1] as (f, H, W, 3) or (f, 3, H, W) (numpy or torch); the waveform is mono (T,) or
(channels, T) float in [-1, 1]. Odd frame sizes are padded by edge replication to even (yuv420p needs
it). The file is written to a temporary name and renamed, so a crash never leaves a half-written mp4.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _frames_uint8(frames) -> np.ndarray:
    arr = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if arr.ndim != 4:
        raise ValueError(f"frames must be (f, H, W, 3) or (f, 3, H, W), got shape {arr.shape}")
    if arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr)


def _waveform(waveform) -> np.ndarray:
    arr = waveform.detach().cpu().numpy() if hasattr(waveform, "detach") else np.asarray(waveform)
    arr = arr.astype(np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] not in (1, 2):
        raise ValueError(f"waveform must be (T,) or (channels<=2, T), got shape {arr.shape}")
    return np.ascontiguousarray(np.clip(arr, -1.0, 1.0))


def frame_strip(frames) -> np.ndarray:
    """The first, middle and last frame side by side, (H, 3W, 3) uint8: a clip at a glance (e.g. an MLflow
    image whose step slider shows it change over training)."""
    video = _frames_uint8(frames)
    n = len(video)
    return np.concatenate([video[0], video[n // 2], video[n - 1]], axis=1)


def write_video(
    path: str | Path, frames, waveform=None, fps: float = 6, sample_rate: int = 16000, crf: int = 18
) -> Path:
    """Encode ``frames`` (and ``waveform`` if given) into an mp4 at ``path``; returns the path."""
    path = Path(path)
    video = _frames_uint8(frames)
    audio = _waveform(waveform) if waveform is not None else None
    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "medium"})
            vs.width, vs.height, vs.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
            if audio is not None:
                layout = "mono" if audio.shape[0] == 1 else "stereo"
                astream = out.add_stream("aac", rate=sample_rate, layout=layout)
            for i, frame in enumerate(video):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts, vf.time_base = i, 1 / rate
                out.mux(vs.encode(vf))
            out.mux(vs.encode(None))
            if audio is not None:
                for start in range(0, audio.shape[1], 1024):
                    block = np.ascontiguousarray(audio[:, start : start + 1024])
                    af = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
                    af.sample_rate, af.pts, af.time_base = sample_rate, start, Fraction(1, sample_rate)
                    out.mux(astream.encode(af))
                out.mux(astream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
