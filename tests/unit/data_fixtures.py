"""Fixtures shared by the data-layer tests (imported by name into test_data_*/test_synth*/test_sync_metric*).

One small synthetic AVSync15: 10 clips per class (9 train / 1 test), 2-4 s long so that encoding stays
around 10-20 s on two cores (once: it is cached between runs). ``synthesize`` reuses a complete dataset with the same
parameters, so every module asking for it shares one copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_platform.dev.synth import synthesize

SYNTH_KW = dict(clips_per_class=10, seed=0, min_duration=2.0, max_duration=4.0, workers=2)


@pytest.fixture(scope="session")
def synth_root(request) -> Path:
    """Root of the synthetic AVSync15, kept in pytest's cache dir between runs (regenerated whenever the
    generator's source or these parameters change: see ``synthesize(reuse=True)``)."""
    summary = synthesize(request.config.cache.mkdir("asva_synth_avsync15"), **SYNTH_KW)
    return Path(summary.out_dir)


@pytest.fixture
def small_cfg() -> SamplingConfig:
    """The paper's sampling at a 64x64 output size (the size does not change any timing logic)."""
    return SamplingConfig(image_size=[64, 64])


def dataset_cfg(root: Path | str, **kw) -> DatasetConfig:
    return DatasetConfig(root=str(root), **kw)
