"""Audio preprocessing as ImageBind does it, without torchaudio.

ImageBind's ``waveform2melspec`` subtracts the waveform mean and calls
``torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, window_type="hanning",
num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)`` with every other option at its default:
pre-emphasis 0.97, per-frame DC removal, FFT size rounded up to a power of two (400 -> 512 samples),
power spectrum, ``snip_edges`` (only whole frames: 198 frames for 2 s at 16 kHz), mel filters from
20 Hz to Nyquist on the Kaldi mel scale ``1127 ln(1 + f/700)``, natural log floored at float32 epsilon.
The result is transposed to (bins, frames), zero-padded or cropped to 204 frames and normalised with
ImageBind's mean/std. :func:`kaldi_fbank` implements exactly that recipe; ``htk_compat`` only moves the
energy column, which ``use_energy=False`` leaves out.
"""

from __future__ import annotations

import functools

import numpy as np
import soxr

from asva_model.data.config import SamplingConfig
from asva_model.data.resample import sinc_resample

_EPS = float(np.finfo(np.float32).eps)  # Kaldi's floor: numeric_limits<float>::epsilon()


def _kaldi_mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(
    num_bins: int, fft_size: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> np.ndarray:
    """Triangular mel filters (num_bins, fft_size // 2 + 1) float32, Kaldi style; the Nyquist column is zero."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < high_freq <= nyquist):
        raise ValueError(f"bad mel range low={low_freq} high={high_freq} for nyquist={nyquist}")
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)  # the filters spread one bin beyond each end
    idx = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + idx * delta, mel_low + (idx + 1) * delta, mel_low + (idx + 2) * delta
    fft_mel = _kaldi_mel(sample_rate / fft_size * np.arange(fft_size // 2, dtype=np.float64))[None, :]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    banks = np.pad(banks, ((0, 0), (0, 1)))  # no weight on the Nyquist bin
    banks = banks.astype(np.float32)
    banks.flags.writeable = False  # cached: shared by every caller
    return banks


@functools.lru_cache(maxsize=8)
def _hann(size: int) -> np.ndarray:
    """Symmetric Hann window (torch.hann_window(periodic=False), Kaldi's "hanning")."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))).astype(np.float32)


def kaldi_fbank(
    waveform: np.ndarray,
    sample_rate: int,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
) -> np.ndarray:
    """Log mel filterbank (frames, num_mel_bins) float32 of a mono waveform, matching ImageBind's kaldi.fbank
    call. numpy, single-threaded on purpose: per-clip work this small gains nothing from a thread pool."""
    x = np.asarray(waveform, dtype=np.float32).reshape(-1)
    win = int(sample_rate * frame_length_ms * 1e-3)
    shift = int(sample_rate * frame_shift_ms * 1e-3)
    fft_size = 1 << (win - 1).bit_length()  # round_to_power_of_two
    if x.size < win:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::shift]  # snip_edges: whole frames only
    frames = frames - frames.mean(axis=1, keepdims=True)  # remove_dc_offset
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # x[j-1], with x[-1] = x[0]
    frames = (frames - preemphasis * previous) * _hann(win)
    spectrum = np.fft.rfft(frames, n=fft_size)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = power @ kaldi_mel_banks(num_mel_bins, fft_size, float(sample_rate)).T
    return np.log(np.maximum(mel, _EPS)).astype(np.float32, copy=False)


def waveform_to_mel(waveform: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """ImageBind's audio input: (1, num_mel_bins, mel_target_length) float32, normalised."""
    x = np.asarray(waveform, dtype=np.float32).reshape(-1)
    fbank = kaldi_fbank(x - x.mean(), cfg.audio_sample_rate, cfg.num_mel_bins).T  # (bins, frames)
    out = np.zeros((cfg.num_mel_bins, cfg.mel_target_length), dtype=np.float32)  # zero padding, as ImageBind
    n = min(fbank.shape[1], cfg.mel_target_length)
    out[:, :n] = fbank[:, :n]
    return ((out - cfg.mel_mean) / cfg.mel_std)[None].astype(np.float32, copy=False)


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int, method: str = "soxr") -> np.ndarray:
    """Band-limited resampling. ``soxr``: soxr HQ, delay-compensated so sample times are kept; ``sinc``:
    torchaudio's default windowed sinc (:func:`~asva_model.data.resample.sinc_resample`), as the authors."""
    if orig_rate == target_rate:
        return np.asarray(waveform, dtype=np.float32)
    if method == "sinc":
        return sinc_resample(np.asarray(waveform, dtype=np.float32), orig_rate, target_rate)
    if method != "soxr":
        raise ValueError(f"resampler must be soxr or sinc, got {method!r}")
    out = soxr.resample(np.asarray(waveform, dtype=np.float32), orig_rate, target_rate, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def window_samples(buffer: np.ndarray, buffer_start: float, start: float, cfg: SamplingConfig) -> np.ndarray:
    """The clip's exactly ``cfg.clip_samples`` samples from a buffer at ``cfg.audio_sample_rate`` whose first
    sample is at time ``buffer_start``; zero-padded where the buffer does not reach (the end of a short clip)."""
    n = cfg.clip_samples
    rate = cfg.audio_sample_rate
    first = int(round(start * rate)) - int(round(buffer_start * rate))  # on the absolute sample grid
    out = np.zeros(n, dtype=np.float32)
    lo, hi = max(first, 0), min(first + n, len(buffer))
    if hi > lo:
        out[lo - first : hi - first] = buffer[lo:hi]
    return out
