"""The AVSync15 reader on a real S3 server (SeaweedFS) through a pyarrow filesystem: list, stat, decode. (The reader
on local files: tests/unit/test_data_reader.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from asva_model.data.avsync15 import open_file, read_split
from asva_model.data.sampling import sample_clip
from tests.unit import data_fixtures as fx
from tests.unit.data_fixtures import dataset_cfg

pytestmark = pytest.mark.integration

small_cfg = fx.small_cfg  # shared fixture
synth_root = fx.synth_root  # shared fixture


def _list_lines(root: Path, name: str) -> list[str]:
    return [ln for ln in (root / name).read_text().splitlines() if ln.strip()]


def test_reads_and_decodes_the_dataset_from_s3(synth_root, s3_server, small_cfg):
    # credentials from the standard chain: the server's credentials file (AWS_SHARED_CREDENTIALS_FILE)
    fs = pafs.S3FileSystem(endpoint_override=s3_server.url, scheme="http", region="us-east-1")
    prefix = f"{s3_server.bucket}/datasets/AVSync15"
    names = _list_lines(synth_root, "test.txt")
    for rel in ["test.txt", "train.txt", "class_mapping.json"] + [f"videos/{n}" for n in names]:
        with fs.open_output_stream(f"{prefix}/{rel}") as f:
            f.write((synth_root / rel).read_bytes())
    local = read_split(dataset_cfg(synth_root), "test")
    remote = read_split(dataset_cfg(prefix), "test", filesystem=fs)
    assert remote.entries == local.entries and remote.skipped == []
    train = read_split(dataset_cfg(prefix), "train", filesystem=fs)  # videos not uploaded: all missing
    assert train.entries == [] and set(train.skip_counts()) == {"missing_file"}
    assert len(train.skipped) == len(_list_lines(synth_root, "train.txt"))
    entry = remote.entries[0]
    with open_file(prefix, entry.path, fs) as f:
        clip = sample_clip(f, 0.0, small_cfg)
    ref = sample_clip(str(synth_root / entry.path), 0.0, small_cfg)
    # Exact on purpose: the same bytes decoded by the same code in this process (the file was copied, not
    # re-encoded), so any difference is a reader bug, not arithmetic.
    np.testing.assert_array_equal(clip.frames, ref.frames)
    np.testing.assert_array_equal(clip.waveform, ref.waveform)
