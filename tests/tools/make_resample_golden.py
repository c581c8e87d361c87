"""Writes tests/unit/data/resample_golden.npz: outputs of the real ``torchaudio.functional.resample`` (default
arguments) that tests/unit/test_resample.py pins ``asva_model.data.resample.sinc_resample`` to.

Runs in a throwaway environment, never the project's (the project must not depend on torchaudio); it imports
nothing of the project. The file in the repo was made with torch 2.13.0+cpu and torchaudio 2.11.1::

    python3 -m venv /tmp/ta-venv
    /tmp/ta-venv/bin/pip install torch==2.13.0 numpy
    /tmp/ta-venv/bin/pip install --no-deps torchaudio==2.11.1
    /tmp/ta-venv/bin/python tests/tools/make_resample_golden.py

PyPI's torchaudio 2.11.1 wheel is built for CUDA: on a CPU-only torch, ``import torchaudio`` fails loading
``torchaudio/lib/_torchaudio.so`` (libc10_cuda.so missing). ``resample`` is pure Python and needs no
extension; moving that file aside in the throwaway venv (``mv _torchaudio.so _torchaudio.so.disabled``)
makes torchaudio skip it.

The inputs are stored next to the outputs, so the test needs no agreement on random generators or ``sin``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torchaudio.functional import resample

OUT = Path(__file__).resolve().parents[1] / "unit" / "data" / "resample_golden.npz"
NOISE_RATES = [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000)]
SINE_RATES = [(44100, 16000), (48000, 16000)]  # the authors' two common cases


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    # Stereo uniform noise, full scale; an odd length so the output length rounds up (ceil) at every ratio.
    noise = np.random.default_rng(20240607).uniform(-1.0, 1.0, (2, 4411)).astype(np.float32)
    arrays["noise"] = noise
    for orig, new in NOISE_RATES:
        arrays[f"noise_{orig}_{new}"] = resample(torch.from_numpy(noise), orig, new).numpy()
    for orig, new in SINE_RATES:
        # 50 ms of a 1 kHz sine (phase 0.7 rad, so it is non-zero at t=0 and the edge effect shows), mono.
        sine = np.sin(2 * np.pi * 1000.0 * np.arange(orig // 20) / orig + 0.7).astype(np.float32)
        arrays[f"sine_{orig}"] = sine
        arrays[f"sine_{orig}_{new}"] = resample(torch.from_numpy(sine), orig, new).numpy()
    assert all(a.dtype == np.float32 for a in arrays.values())
    arrays["versions"] = np.array(
        [f"torch {torch.__version__}", f"torchaudio {torchaudio.__version__}", f"numpy {np.__version__}"]
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(
        f"wrote {OUT} ({OUT.stat().st_size} bytes): "
        + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
