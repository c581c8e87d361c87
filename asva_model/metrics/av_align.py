"""AV-Align (Yariv et al., "Diverse and Aligned Audio-to-Video Generation via Text-to-Video Model Adaptation",
AAAI 2024): the intersection over union of a clip's audio peaks and its motion peaks. Weights-free.

* Audio peaks: librosa's onset detection (default onset strength and peak picking) on the audio resampled to
  librosa's default 22,050 Hz, as the published metric loads its audio.
* Motion peaks: the mean Farneback optical-flow magnitude between consecutive grey frames (pyramid scale 0.5,
  3 levels, window 15, 3 iterations, poly_n 5, poly_sigma 1.2); frame 0 takes the flow to frame 1. A peak is
  a frame whose magnitude exceeds both neighbours' and 0.1 pixel, at time index / fps.
* An audio peak is matched when a motion peak lies strictly within one frame (1 / fps) of it; the score is
  matches / (audio peaks + motion peaks - matches), in [0, 1]. A clip with no peak at all has no score (NaN).

The published metric reads an mp4 with OpenCV (BGR, uint8); here the clip's frames in [0, 1] are rounded to
uint8 and greyed with the same BT.601 weights, so the numbers match on the same pixels.
"""

from __future__ import annotations

import numpy as np

AUDIO_RATE = 22050
"""librosa's default load rate, at which the published metric finds onsets."""
MIN_FLOW = 0.1
"""Mean flow magnitude (pixels) a motion peak must exceed."""


HOP = 512
"""librosa's default onset hop."""


def audio_peaks(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times (s) of a mono waveform."""
    import librosa

    y = np.asarray(waveform, dtype=np.float32)
    if sample_rate != AUDIO_RATE:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=AUDIO_RATE)
    envelope = librosa.onset.onset_strength(y=y, sr=AUDIO_RATE, hop_length=HOP)
    return pick_onsets(envelope) * HOP / AUDIO_RATE


def pick_onsets(envelope: np.ndarray, sr: int = AUDIO_RATE, hop: int = HOP) -> np.ndarray:
    """The frames ``librosa.onset.onset_detect`` picks from an onset envelope at its defaults, written out
    here: librosa's picker is numba-compiled, and that compiled code crashes on this project's CPU machines.
    The envelope is scaled to [0, 1]; a frame is an onset when it is the maximum of the 30 ms before it and
    itself, at least 0.07 above the mean of the 100 ms around it, and more than 30 ms after the last onset."""
    x = np.asarray(envelope, dtype=np.float64)
    if not x.any() or not np.all(np.isfinite(x)):
        return np.zeros(0, dtype=int)
    x = x - x.min()
    x = x / (x.max() + np.finfo(np.float64).tiny)
    pre_max, post_max = int(0.03 * sr // hop), 1  # librosa's defaults, in frames
    pre_avg, post_avg = int(0.10 * sr // hop), int(0.10 * sr // hop) + 1
    wait, delta, n_frames = int(0.03 * sr // hop), 0.07, len(x)
    peaks = []
    if x[0] >= x[: min(post_max, n_frames)].max() and x[0] >= x[: min(post_avg, n_frames)].mean() + delta:
        peaks.append(0)
    n = wait + 1 if peaks else 1
    while n < n_frames:
        window_max = x[max(0, n - pre_max) : min(n + post_max, n_frames)].max()
        window_mean = x[max(0, n - pre_avg) : min(n + post_avg, n_frames)].mean()
        if x[n] == window_max and x[n] >= window_mean + delta:
            peaks.append(n)
            n += wait + 1
        else:
            n += 1
    return np.asarray(peaks, dtype=int)


def _grey_uint8(frames: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB in [0, 1] -> (N, H, W) uint8 grey (BT.601 weights, as OpenCV's BGR2GRAY)."""
    import cv2

    rgb = np.clip(np.rint(np.asarray(frames, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    return np.stack(
        [cv2.cvtColor(np.ascontiguousarray(f.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY) for f in rgb]
    )


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """(N,) mean optical-flow magnitude into each frame (frame 0: the flow from frame 0 to frame 1)."""
    import cv2

    grey = _grey_uint8(frames)
    if len(grey) < 2:
        return np.zeros(len(grey))

    def mean_flow(a: np.ndarray, b: np.ndarray) -> float:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))

    steps = [mean_flow(grey[i - 1], grey[i]) for i in range(1, len(grey))]
    return np.asarray([steps[0], *steps])


def motion_peaks(frames: np.ndarray, fps: float) -> np.ndarray:
    """Times (s) of the frames whose flow magnitude is a strict local maximum above :data:`MIN_FLOW`."""
    m = flow_magnitudes(frames)
    inner = np.arange(1, len(m) - 1)
    keep = inner[(m[inner] > m[inner - 1]) & (m[inner] > m[inner + 1]) & (m[inner] > MIN_FLOW)]
    return keep / fps


def peak_iou(audio: np.ndarray, motion: np.ndarray, fps: float) -> float:
    """Audio peaks with a motion peak strictly within one frame, over the union of both peak sets."""
    audio, motion = np.asarray(audio, dtype=np.float64), np.asarray(motion, dtype=np.float64)
    if len(audio) + len(motion) == 0:
        return float("nan")
    window = 1.0 / fps
    hits = sum(bool(np.any(np.abs(motion - a) < window)) for a in audio)
    return hits / (len(audio) + len(motion) - hits)


def av_align(frames: np.ndarray, waveform: np.ndarray, sample_rate: int, fps: float) -> float:
    """AV-Align of one clip: ``frames`` (N, 3, H, W) RGB in [0, 1], ``waveform`` mono at ``sample_rate``."""
    return peak_iou(audio_peaks(waveform, sample_rate), motion_peaks(frames, fps), fps)
