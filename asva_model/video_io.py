"""Write generated clips as mp4 (H.264 yuv420p video + optional AAC audio) with PyAV; generic for any stage.

``write_video(path, frames, waveform=None, fps=6, sample_rate=16000)``: frames are uint8 (f, H, W, 3) or
float in [0, 1] as (f, H, W, 3) or (f, 3, H, W) (numpy or torch); the waveform is mono (T,) or
(channels, T) float in [-1, 1]. Odd frame sizes are padded by edge replication to even (yuv420p needs
it). The file is written to a temporary name and renamed, so a crash never leaves a half-written mp4.

Colour: RGB -> YUV is done here in numpy (:func:`rgb_to_yuv420p`), not by swscale, whose default conversion
rounds inaccurately (about -1/255 per channel on a round trip). The matrix is BT.601 in limited ("tv")
range, chroma is the rounded mean of each 2x2 block, and the stream is tagged with what was used
(matrix, primaries and transfer SMPTE 170M, limited range, chroma sited at the block centre; in the H.264
VUI and the mp4 `colr` box), so a player decodes with the same matrix.
Read it back with :func:`asva_model.data.decode.frame_to_rgb`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# BT.601 luma weights (the matrix of Rec. 601 / SMPTE 170M; BT.470BG has the same coefficients).
KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB
# FFmpeg's enum values (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic, AVColorRange) written
# into the H.264 VUI and the mp4 `colr` box.
COLORSPACE_SMPTE170M = 6
PRIMARIES_SMPTE170M = 6
TRC_SMPTE170M = 6
RANGE_LIMITED = 1  # AVCOL_RANGE_MPEG: Y in [16, 235], Cb/Cr in [16, 240]


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


def _block_mean(x: np.ndarray) -> np.ndarray:
    """(H, W) -> (H/2, W/2): the mean of each 2x2 block."""
    h, w = x.shape
    return x.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """One uint8 (H, W, 3) RGB frame (H, W even) as yuv420p planes in the layout
    ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes: (H * 3 // 2, W) uint8, the Y plane then the
    (H/2, W/2) Cb and Cr planes, each laid row-major into W-wide rows. BT.601, limited range; each chroma
    sample is the mean of its 2x2 block (so it sits at the block's centre); every value is rounded to nearest
    (halves up)."""
    h, w = frame.shape[:2]
    rgb = frame.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = KR * r + KG * g + KB * b  # [0, 255]
    # The matrix is linear: Cb / Cr of the block means are the means of the block's Cb / Cr.
    luma_c, r_c, b_c = _block_mean(luma), _block_mean(r), _block_mean(b)
    y = 16.0 + luma * (219.0 / 255.0)
    cb = 128.0 + (b_c - luma_c) * (224.0 / 255.0) / (2.0 * (1.0 - KB))
    cr = 128.0 + (r_c - luma_c) * (224.0 / 255.0) / (2.0 * (1.0 - KR))
    return np.concatenate([_round_u8(y), _round_u8(cb).reshape(h // 4, w), _round_u8(cr).reshape(h // 4, w)])


def _tag_colour(target) -> None:
    """Mark a codec context or frame as BT.601 (SMPTE 170M) limited range, what :func:`rgb_to_yuv420p` does."""
    target.colorspace = COLORSPACE_SMPTE170M
    target.color_primaries = PRIMARIES_SMPTE170M
    target.color_trc = TRC_SMPTE170M
    target.color_range = RANGE_LIMITED


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
            # Chroma samples sit at the centre of their 2x2 block (the mean of it): say so in the H.264 VUI, so
            # a decoder upsamples from there rather than from the default left edge.
            options = {"crf": str(crf), "preset": "medium", "chroma_sample_location": "center"}
            vs = out.add_stream("libx264", rate=rate, options=options)
            vs.width, vs.height, vs.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
            _tag_colour(vs.codec_context)
            if audio is not None:
                layout = "mono" if audio.shape[0] == 1 else "stereo"
                astream = out.add_stream("aac", rate=sample_rate, layout=layout)
            for i, frame in enumerate(video):
                vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
                _tag_colour(vf)
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
