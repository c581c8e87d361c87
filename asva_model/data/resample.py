"""torchaudio's default resampler (``torchaudio.functional.resample``), reproduced without torchaudio.

Why it exists: the ASVA authors' audio loader resamples each decoded (channels, samples) float32 track with
``torchaudio.functional.resample(waveform, orig_freq, new_freq)`` at its defaults (Hann-windowed sinc,
``lowpass_filter_width=6``, ``rolloff=0.99``), e.g. 44100 -> 16000 and 48000 -> 16000. The ``authors``
protocol (``SamplingConfig.resampler == "sinc"``) needs those exact samples; the project must not depend on
torchaudio, so the algorithm is rebuilt here. The project's clean protocol uses soxr HQ instead
(:func:`asva_model.data.audio.resample`): a better filter, and delay-compensated at the edges.

The algorithm, after reducing both rates by their gcd to ``orig`` and ``new``: output sample ``j`` sits at
input time ``j * orig / new`` (in input samples) and is a windowed-sinc interpolation of the input, the
sinc's cutoff at ``rolloff`` times the lower of the two Nyquist rates and the Hann window spanning
``lowpass_filter_width`` zero crossings either side. Output samples ``j`` and ``j + new`` use the same
weights on an input shifted by ``orig`` samples, so the ``new`` distinct filters form the output channels of
one conv1d with stride ``orig``. The input is zero-padded on both sides, so the first and last few output
samples see zeros where the signal was cut (no edge compensation, unlike soxr).

Results match torchaudio 2.11 to the bit on CPU for float32 input (checked against it; the unit test pins
golden outputs it produced): the filters are computed in float32, the input's dtype, in the same order of
float32 operations, as ``functional.resample`` does (``transforms.Resample`` instead builds them in float64
and casts, which differs in the last bits).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


def _check_rate(name: str, rate: int) -> int:
    if isinstance(rate, bool) or int(rate) != rate or rate <= 0:
        raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    return int(rate)


@functools.lru_cache(maxsize=16)
def _filters(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """The ``new`` interpolation filters (new, 1, 2 * half + orig) float32 for gcd-reduced rates, and
    ``half``, how many input samples each reaches before its phase. Cached, shared: never modify."""
    # Times below are in units of 1 / gcd seconds: input sample i is at i / orig, output j at j / new.
    cutoff = (
        min(orig, new) * rolloff
    )  # twice the low-pass cutoff, in those units (sinc zeros 1 / cutoff apart)
    # Samples reached on each side: enough to cover lowpass_filter_width zero crossings of the sinc.
    half = math.ceil(lowpass_filter_width * orig / cutoff)
    # Float32 throughout, in the order torchaudio evaluates it for a float32 waveform, so the filters (and
    # the outputs) agree to the bit rather than to float32 rounding.
    tap_times = torch.arange(-half, half + orig, dtype=torch.float32) / orig  # taps, relative to a stride
    out_times = torch.arange(0, -new, -1, dtype=torch.float32) / new  # minus each phase's output time
    x = (out_times[:, None] + tap_times[None, :]) * cutoff  # tap - output time, in sinc zero crossings
    # cos^2 is periodic: taps beyond the window's ends are pinned to its end, where it is (nearly) zero.
    x = x.clamp(-lowpass_filter_width, lowpass_filter_width)
    hann = torch.cos(x * math.pi / lowpass_filter_width / 2) ** 2
    x = x * math.pi
    sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)
    # Scaling by cutoff / orig gives the low-pass unit gain at DC.
    filters = sinc * (hann * (cutoff / orig))
    return filters[:, None, :], half


def sinc_resample(
    waveform: np.ndarray, orig_rate: int, new_rate: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> np.ndarray:
    """(..., T) float32 -> (..., ceil(new_rate * T / orig_rate)) float32, resampled along the last axis as
    ``torchaudio.functional.resample(waveform, orig_rate, new_rate, lowpass_filter_width, rolloff)`` with
    the Hann-windowed sinc does. Other float dtypes are cast to float32 first (the authors' tensors are
    float32). Equal rates return the input as float32, untouched, as torchaudio returns its input."""
    orig_rate = _check_rate("orig_rate", orig_rate)
    new_rate = _check_rate("new_rate", new_rate)
    if (
        isinstance(lowpass_filter_width, bool)
        or int(lowpass_filter_width) != lowpass_filter_width
        or lowpass_filter_width <= 0
    ):
        raise ValueError(f"lowpass_filter_width must be a positive integer, got {lowpass_filter_width!r}")
    if not 0.0 < rolloff <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff!r}")
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"waveform must have a non-empty last (time) axis, got shape {x.shape}")
    if orig_rate == new_rate:
        return x
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    filters, half = _filters(orig, new, int(lowpass_filter_width), float(rolloff))

    lead, length = x.shape[:-1], x.shape[-1]
    signals = torch.from_numpy(np.ascontiguousarray(x).reshape(-1, 1, length))
    # Zeros before and after: `half` so the first output sees its full filter support, and `half + orig`
    # so the last stride has a whole window; torchaudio pads the same way, hence its edge attenuation.
    padded = torch.nn.functional.pad(signals, (half, half + orig))
    with torch.no_grad():
        phases = torch.nn.functional.conv1d(padded, filters, stride=orig)  # (n, new, strides)
    # Interleave the phases: output j = stride j // new, phase j % new.
    out = phases.transpose(1, 2).reshape(phases.shape[0], -1)
    n_out = -(-new * length // orig)  # ceil(new * T / orig), in integers: the same as torchaudio's float ceil
    return np.ascontiguousarray(out[:, :n_out].numpy()).reshape(*lead, n_out)
