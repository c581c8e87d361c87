"""The evaluation protocol on a synthetic test split: which videos, which windows, which names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from asva_model.data.sampling import probe_duration
from asva_platform.dev.fixtures import tiny_eval_overrides
from asva_platform.errors import UserError
from asva_platform.evaluation.plan import plan_evaluation
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage


@pytest.fixture(scope="module")
def overrides(tmp_path_factory) -> list[str]:
    return tiny_eval_overrides(tmp_path_factory.getbasetemp() / "eval_inputs")


def _plan(experiment):
    return plan_evaluation(experiment.eval, experiment.dataset, experiment.sampling, Storage())


def _data_root(overrides: list[str]) -> Path:
    return Path(next(o for o in overrides if o.startswith("dataset.root=")).split("=", 1)[1])


def test_every_test_video_gives_three_evenly_spaced_windows(overrides):
    cfg = load_experiment(None, overrides)
    plan = _plan(cfg)
    root = _data_root(overrides)
    listed = sorted(line for line in (root / "test.txt").read_text().splitlines() if line)
    assert [t.entry.name for t in plan.tasks] == listed and not plan.skipped
    for task in plan.tasks:
        duration = probe_duration(root / "videos" / task.entry.name)
        starts = [w.start for w in task.windows]
        np.testing.assert_allclose(starts, np.linspace(0.0, duration - 2.0, 3), atol=1e-9)
        stem = Path(task.entry.name).stem
        assert [w.name for w in task.windows] == [
            f"{task.entry.class_dir}/{stem}_clip-{k:02d}" for k in range(3)
        ]
        assert all(w.duration == 2.0 and w.class_name == task.entry.class_dir for w in task.windows)
        assert task.windows[-1].end <= duration + 1e-9


def test_max_videos_spreads_over_classes(overrides):
    plan = _plan(load_experiment(None, overrides + ["eval.max_videos=4"]))
    classes = [t.entry.class_dir for t in plan.tasks]
    assert len(classes) == 4 and len(set(classes)) == 4 and classes == sorted(classes)
    assert len(plan.windows) == 12


def test_clips_per_video_follows_the_sampling_config(overrides):
    plan = _plan(load_experiment(None, overrides + ["eval.max_videos=1", "sampling.test_clips_per_video=1"]))
    (task,) = plan.tasks
    duration = probe_duration(_data_root(overrides) / "videos" / task.entry.name)
    assert [w.start for w in task.windows] == [0.0] and task.windows[0].name.endswith("_clip-00")
    assert duration >= 2.0


def test_unreadable_videos_are_reported_not_dropped(overrides, tmp_path):
    src = _data_root(overrides)
    good = sorted(line for line in (src / "test.txt").read_text().splitlines() if line)[:2]
    for name in good:
        (tmp_path / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "videos" / name, tmp_path / "videos" / name)
    bad = f"{good[0].split('/')[0]}/garbage.mp4"
    (tmp_path / "videos" / bad).write_bytes(b"not an mp4 at all" * 100)
    (tmp_path / "test.txt").write_text("\n".join([*good, bad, "no_such_class/x.mp4"]) + "\n")
    shutil.copy(src / "class_mapping.json", tmp_path / "class_mapping.json")
    plan = _plan(load_experiment(None, overrides + [f"dataset.root={tmp_path}"]))
    assert [t.entry.name for t in plan.tasks] == good
    reasons = {s["entry"]: s["reason"] for s in plan.skipped}
    assert reasons == {bad: "corrupt_video", "no_such_class/x.mp4": "unknown_class"}


def test_no_usable_video_is_a_one_line_error(overrides, tmp_path):
    shutil.copy(_data_root(overrides) / "class_mapping.json", tmp_path / "class_mapping.json")
    (tmp_path / "test.txt").write_text("dog_barking/missing.mp4\n")
    with pytest.raises(UserError, match="no usable videos"):
        _plan(load_experiment(None, overrides + [f"dataset.root={tmp_path}"]))
    with pytest.raises(UserError, match="directory not found"):
        _plan(load_experiment(None, overrides + [f"dataset.root={tmp_path}/nope"]))


def test_an_unsorted_test_list_keeps_each_clips_class_as_its_it_text(overrides, tmp_path):
    """The paper's eval.py sorts the video names but not the class list read beside them, so with an
    unsorted test.txt its IT text would belong to another video. Here the text travels with the entry."""
    src = _data_root(overrides)
    listed = sorted(line for line in (src / "test.txt").read_text().splitlines() if line)
    unsorted = listed[::-1]  # classes in reverse order: sorting the names alone would pair them wrongly
    for name in unsorted:
        (tmp_path / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "videos" / name, tmp_path / "videos" / name)
    (tmp_path / "test.txt").write_text("\n".join(unsorted) + "\n")
    shutil.copy(src / "class_mapping.json", tmp_path / "class_mapping.json")
    plan = _plan(load_experiment(None, overrides + [f"dataset.root={tmp_path}"]))
    assert [t.entry.name for t in plan.tasks] == listed  # read in the paper's (sorted) order
    theirs = list(zip(sorted(unsorted), [name.split("/")[0] for name in unsorted]))
    assert any(video.split("/")[0] != cls for video, cls in theirs)  # the pairing their code would make
    for task in plan.tasks:
        assert {w.class_name for w in task.windows} == {task.entry.name.split("/")[0]}
