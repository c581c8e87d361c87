"""``sinc_resample`` is torchaudio's default ``functional.resample``: golden outputs of the real torchaudio
(made by tests/tools/make_resample_golden.py), plus properties that another resampler would fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asva_model.data.audio import resample as soxr_resample
from asva_model.data.resample import sinc_resample

GOLDEN = Path(__file__).parent / "data" / "resample_golden.npz"
# Float32 rounding, for unit-amplitude signals: the result is bit-identical to torchaudio on the torch that
# made the file, but another torch build, CPU or thread count may sum the conv1d in another order.
ATOL = 1e-6


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("orig", [44100, 48000, 22050, 8000])
def test_matches_torchaudio_on_stereo_noise(golden, orig):
    expected = golden[f"noise_{orig}_16000"]
    got = sinc_resample(golden["noise"], orig, 16000)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("orig", [44100, 48000])
def test_matches_torchaudio_on_a_sine(golden, orig):
    expected = golden[f"sine_{orig}_16000"]
    got = sinc_resample(golden[f"sine_{orig}"], orig, 16000)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("orig", "new"), [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (32000, 16000), (3, 2)]
)
@pytest.mark.parametrize("length", [1, 2, 7, 1023, 4410, 4411, 88201])
def test_output_length_is_the_ceiling_of_the_rate_ratio(orig, new, length):
    out = sinc_resample(np.zeros((2, length), np.float32), orig, new)
    assert out.shape == (2, -(-new * length // orig))  # soxr rounds instead: 4411 samples -> 1600, not 1601


def test_equal_rates_return_the_input_as_float32():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 1000)).astype(np.float32)
    assert sinc_resample(x, 16000, 16000) is x
    y = sinc_resample(x.astype(np.float64), 44100, 44100)
    assert y.dtype == np.float32 and np.array_equal(y, x)


def test_rates_are_reduced_by_their_gcd_and_leading_axes_are_independent():
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 1000)).astype(np.float32)
    out = sinc_resample(x, 44100, 16000)
    assert out.shape == (2, 3, 363) and out.dtype == np.float32
    np.testing.assert_array_equal(out, sinc_resample(x, 441, 160))
    np.testing.assert_allclose(out[1, 2], sinc_resample(x[1, 2], 44100, 16000), rtol=0, atol=ATOL)


def _sine(rate: int, seconds: float = 0.2, hz: float = 1000.0, phase: float = 0.7) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate + phase)


@pytest.mark.parametrize("orig", [44100, 48000, 22050])
def test_band_limited_sine_comes_out_as_the_same_sine_with_zero_padded_edges(orig):
    y = sinc_resample(_sine(orig).astype(np.float32), orig, 16000)
    truth = _sine(16000)
    assert y.shape == truth.shape
    err = np.abs(y - truth)
    # Away from the edges (1 ms) only the filter's passband ripple is left (about 4e-4 at 1 kHz).
    assert err[16:-16].max() < 1e-3
    # At t=0 the filter's left half sees torchaudio's zero padding: the first sample is attenuated (to about
    # 0.72 of the sine at 44.1/48 kHz, 0.89 at 22.05 kHz), then it rings back within a few samples.
    assert 0.6 < y[0] / truth[0] < 0.9
    assert err[0] > 0.05 and err[6] < 1e-3


def test_a_constant_starts_low_and_overshoots_as_torchaudio_does():
    # The zero padding makes the start a step: the output opens at ~0.68 and overshoots to ~1.074 (Gibbs).
    y = sinc_resample(np.ones(4410, np.float32), 44100, 16000)
    assert y[0] == pytest.approx(0.6798, abs=1e-3) and y[1] == pytest.approx(1.0742, abs=1e-3)
    assert np.abs(y[40:-40] - 1.0).max() < 1e-3


def test_differs_from_the_clean_protocols_soxr_resampler():
    x = np.random.default_rng(2).uniform(-1, 1, 4410).astype(np.float32)
    ours, soxr = sinc_resample(x, 44100, 16000), soxr_resample(x, 44100, 16000)
    assert ours.shape == soxr.shape
    assert np.abs(ours - soxr)[50:-50].max() > 1e-4  # two different filters, not one under two names


@pytest.mark.parametrize(
    ("waveform", "orig", "new"),
    [
        (np.zeros(10, np.float32), 0, 16000),
        (np.zeros(10, np.float32), 44100, -16000),
        (np.zeros(10, np.float32), 44100.5, 16000),
        (np.zeros((2, 0), np.float32), 44100, 16000),
        (np.float32(1.0), 44100, 16000),
    ],
)
def test_bad_arguments_raise_value_error(waveform, orig, new):
    with pytest.raises(ValueError):
        sinc_resample(waveform, orig, new)
