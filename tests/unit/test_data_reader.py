"""The AVSync15 reader on a generated dataset: counts, list types, bad list entries (the same reader on an S3
server: tests/integration/test_data_reader_s3.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asva_model.data.avsync15 import AVSYNC15_CLASSES, read_class_mapping, read_split
from asva_model.data.errors import SkipReason
from tests.unit import data_fixtures as fx
from tests.unit.data_fixtures import dataset_cfg

synth_root = fx.synth_root  # shared fixture


def _list_lines(root: Path, name: str) -> list[str]:
    return [ln for ln in (root / name).read_text().splitlines() if ln.strip()]


def test_class_names_are_the_real_ones():
    assert len(AVSYNC15_CLASSES) == 15 and len(set(AVSYNC15_CLASSES)) == 15
    assert "playing_violin__fiddle" in AVSYNC15_CLASSES
    assert AVSYNC15_CLASSES == tuple(sorted(AVSYNC15_CLASSES))


@pytest.mark.parametrize("split", ["train", "test"])
def test_counts_per_class_match_the_lists(synth_root, split):
    listing = read_split(dataset_cfg(synth_root), split)
    lines = _list_lines(synth_root, f"{split}.txt")
    expected: dict[str, int] = {}
    for ln in lines:
        expected[ln.split("/")[0]] = expected.get(ln.split("/")[0], 0) + 1
    assert listing.skipped == []
    assert listing.counts_per_class() == expected
    assert set(expected) == set(AVSYNC15_CLASSES)
    assert set(expected.values()) == ({9} if split == "train" else {1})  # 90/10 of 10 clips per class
    mapping = json.loads((synth_root / "class_mapping.json").read_text())
    for e in listing.entries:
        assert e.path == f"videos/{e.name}" and (synth_root / e.path).is_file()
        assert e.prompt == mapping[e.class_dir] and e.start is None and e.end is None
    assert [e.name for e in listing.entries] == lines


def test_max_clips_per_class_caps_each_class(synth_root):
    listing = read_split(dataset_cfg(synth_root, max_clips_per_class=4), "train")
    assert set(listing.counts_per_class().values()) == {4} and listing.skipped == []


def _copy_layout(src: Path, dst: Path) -> Path:
    """Lists + mapping + a few videos, so a test can write its own list lines."""
    dst.mkdir(parents=True)
    shutil.copy(src / "class_mapping.json", dst / "class_mapping.json")
    for name in _list_lines(src, "test.txt")[:3]:
        (dst / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "videos" / name, dst / "videos" / name)
    return dst


def test_clip_list_type_parses_start_end_and_rejects_bad_lines(synth_root, tmp_path):
    root = _copy_layout(synth_root, tmp_path / "ds")
    good = _list_lines(synth_root, "test.txt")[:2]
    (root / "train.txt").write_text(
        f"{good[0]},0.5,2.9\n"
        f"{good[1]}, 0 , 2.5\n"
        f"{good[0]},1.0\n"  # two fields
        f"{good[0]},a,b\n"  # not numbers
        f"{good[0]},2.0,1.0\n"  # end before start
        "\n# a comment line is not an entry\n"
    )
    listing = read_split(dataset_cfg(root, list_type="clip"), "train")
    assert [(e.name, e.start, e.end) for e in listing.entries] == [(good[0], 0.5, 2.9), (good[1], 0.0, 2.5)]
    assert [(s.reason, s.line_no) for s in listing.skipped] == [
        (SkipReason.BAD_LIST_ENTRY, n) for n in (3, 4, 5)
    ]
    assert "2 field" in listing.skipped[0].detail


def test_every_bad_list_entry_is_recorded_with_its_reason(synth_root, tmp_path):
    root = _copy_layout(synth_root, tmp_path / "ds")
    good = _list_lines(synth_root, "test.txt")[:3]
    (root / "videos" / "dog_barking" / "empty.mp4").parent.mkdir(parents=True, exist_ok=True)
    (root / "videos" / "dog_barking" / "empty.mp4").write_bytes(b"")
    lines = [
        good[0],
        "not_a_class/x.mp4",  # unknown class
        "dog_barking/missing.mp4",  # missing file
        "dog_barking/empty.mp4",  # zero bytes
        "/abs/dog_barking/x.mp4",  # absolute
        "dog_barking/../hammering/x.mp4",  # escapes the class folder
        "just_a_file.mp4",  # no class component
        good[0],  # duplicate
        good[1],
    ]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    listing = read_split(dataset_cfg(root), "train")
    assert [e.name for e in listing.entries] == [good[0], good[1]]
    got = {s.entry: s.reason for s in listing.skipped}
    assert got == {
        "not_a_class/x.mp4": SkipReason.UNKNOWN_CLASS,
        "dog_barking/missing.mp4": SkipReason.MISSING_FILE,
        "dog_barking/empty.mp4": SkipReason.EMPTY_FILE,
        "/abs/dog_barking/x.mp4": SkipReason.BAD_LIST_ENTRY,
        "dog_barking/../hammering/x.mp4": SkipReason.BAD_LIST_ENTRY,
        "just_a_file.mp4": SkipReason.BAD_LIST_ENTRY,
    } | {good[0]: SkipReason.BAD_LIST_ENTRY}
    assert len(listing.entries) + len(listing.skipped) == len(lines)  # nothing dropped silently
    assert listing.skip_counts() == {
        "unknown_class": 1,
        "missing_file": 1,
        "empty_file": 1,
        "bad_list_entry": 4,
    }
    assert all(s.list_file == "train.txt" and s.line_no >= 1 and s.detail for s in listing.skipped)


def test_missing_layout_files_are_clear_errors(synth_root, tmp_path):
    root = _copy_layout(synth_root, tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="train.txt"):
        read_split(dataset_cfg(root), "train")
    (root / "train.txt").write_text("")
    (root / "class_mapping.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="class_mapping.json"):
        read_split(dataset_cfg(root), "train")
    (root / "class_mapping.json").unlink()
    with pytest.raises(FileNotFoundError, match="class_mapping.json"):
        read_class_mapping(dataset_cfg(root))


def test_classes_keeps_only_those_classes_and_names_unknown_ones(synth_root):
    listing = read_split(dataset_cfg(synth_root, classes=["hammering", "dog_barking"]), "train")
    assert set(listing.counts_per_class()) == {"hammering", "dog_barking"} and listing.skipped == []
    with pytest.raises(ValueError, match=r"dataset.classes: \['hammer'\]"):
        read_split(dataset_cfg(synth_root, classes=["hammer"]), "train")
