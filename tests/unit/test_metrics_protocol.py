"""The evaluation protocol: which windows, which frames, how clips are laid out and how scores are reported."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

import numpy as np
import pytest
import torch

from asva_model.data.config import SamplingConfig
from asva_model.data.sampling import test_window_starts
from asva_model.metrics.protocol import (
    PAPER_CLIP_DURATION,
    EvalWindow,
    as_frames_first,
    clip_name,
    image_metric_frames,
    reported,
)

# The paper's windows, written out as a reference: the runtime draws them with
# asva_model.data.sampling.test_window_starts (checked against this below) and wraps them in EvalWindow.
PAPER_CLIPS_PER_VIDEO = 3
"""Evaluation windows per test video."""
_DURATION_TOLERANCE_S = 1e-3


def window_starts(
    duration: float, clip_duration: float = PAPER_CLIP_DURATION, num_clips: int = PAPER_CLIPS_PER_VIDEO
) -> list[float]:
    """Start times (s) of the evaluation windows of a video lasting ``duration`` s (min of video and audio)."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if not np.isfinite(duration) or duration < clip_duration - _DURATION_TOLERANCE_S:
        raise ValueError(f"video lasts {duration} s, shorter than one {clip_duration} s evaluation window")
    span = max(duration - clip_duration, 0.0)
    if num_clips == 1:
        return [span / 2.0]
    return [float(s) for s in np.linspace(0.0, span, num_clips)]


def evaluation_windows(
    videos: Iterable[tuple[str, float] | tuple[str, float, str]],
    clip_duration: float = PAPER_CLIP_DURATION,
    num_clips: int = PAPER_CLIPS_PER_VIDEO,
) -> list[EvalWindow]:
    """All evaluation windows, sorted by video path then window index (the paper sorts the GT names).

    ``videos`` holds ``(path, duration)`` -- the class is the path's first component -- or
    ``(path, duration, class_name)``.
    """
    windows = []
    for entry in videos:
        path, duration = entry[0], float(entry[1])
        class_name = entry[2] if len(entry) > 2 else PurePosixPath(path).parts[0]
        try:
            starts = window_starts(duration, clip_duration, num_clips)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        windows += [EvalWindow(path, class_name, k, s, clip_duration) for k, s in enumerate(starts)]
    return sorted(windows, key=lambda w: (w.video, w.index))


def test_three_evenly_spaced_windows_head_centre_tail():
    assert window_starts(5.0) == pytest.approx([0.0, 1.5, 3.0])
    assert window_starts(10.0) == pytest.approx([0.0, 4.0, 8.0])


@pytest.mark.parametrize("duration", [2.0, 2.5, 5.0, 7.3, 10.0])
def test_the_runtime_draws_the_reference_windows(duration):
    assert list(test_window_starts(duration, SamplingConfig())) == pytest.approx(window_starts(duration))


def test_a_two_second_video_repeats_its_only_window():
    assert window_starts(2.0) == [0.0, 0.0, 0.0]


def test_a_single_window_is_centred():
    assert window_starts(6.0, num_clips=1) == [2.0]


def test_too_short_videos_are_rejected():
    with pytest.raises(ValueError, match="shorter than one 2.0 s"):
        window_starts(1.5)
    with pytest.raises(ValueError, match="num_clips"):
        window_starts(5.0, num_clips=0)


def test_evaluation_windows_sorted_named_and_classed():
    windows = evaluation_windows([("lions_roaring/b.mp4", 2.0), ("dog_barking/a.mp4", 4.0, "dogs")])
    assert [(w.video, w.index) for w in windows] == [
        ("dog_barking/a.mp4", 0),
        ("dog_barking/a.mp4", 1),
        ("dog_barking/a.mp4", 2),
        ("lions_roaring/b.mp4", 0),
        ("lions_roaring/b.mp4", 1),
        ("lions_roaring/b.mp4", 2),
    ]
    first = windows[1]
    assert first == EvalWindow("dog_barking/a.mp4", "dogs", 1, 1.0, 2.0)
    assert first.end == pytest.approx(3.0)
    assert first.name == "dog_barking/a_clip-01"
    assert windows[3].class_name == "lions_roaring"  # the path's first component by default


def test_window_errors_name_the_video():
    with pytest.raises(ValueError, match=r"x/short.mp4: video lasts 1.0 s"):
        evaluation_windows([("x/short.mp4", 1.0)])


def test_clip_names_follow_the_paper_script():
    assert (
        clip_name("baby_babbling_crying/5Uodeo_Ln84_000014_000024_6.5_9.5.mp4", 2)
        == "baby_babbling_crying/5Uodeo_Ln84_000014_000024_6.5_9.5_clip-02"
    )


def _numbered_clip(frames: int = 12, size: int = 4) -> torch.Tensor:
    # Frame k is filled with k / 20 so selections can be read back from the values.
    return (
        (torch.arange(frames, dtype=torch.float32) / 20).view(frames, 1, 1, 1).expand(frames, 3, size, size)
    )


def test_image_metrics_use_frames_2_to_12():
    chosen = image_metric_frames(_numbered_clip())
    assert chosen.shape[0] == 11
    assert chosen[:, 0, 0, 0].tolist() == pytest.approx([k / 20 for k in range(1, 12)])
    with pytest.raises(ValueError, match="at least 2 frames"):
        image_metric_frames(_numbered_clip(frames=1))


def test_both_clip_layouts_give_frames_first():
    clip = _numbered_clip()
    assert torch.equal(as_frames_first(clip), clip)
    assert torch.equal(as_frames_first(clip.permute(1, 0, 2, 3)), clip)
    three = _numbered_clip(frames=3)
    assert torch.equal(as_frames_first(three.permute(1, 0, 2, 3), layout="CNHW"), three)


def test_uint8_is_scaled_and_bad_clips_are_rejected():
    assert as_frames_first(torch.full((12, 3, 2, 2), 255, dtype=torch.uint8)).max().item() == 1.0
    with pytest.raises(ValueError, match="ambiguous"):
        as_frames_first(torch.zeros(3, 3, 4, 4))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        as_frames_first(torch.full((12, 3, 2, 2), -1.0))
    with pytest.raises(ValueError, match="4-D"):
        as_frames_first(torch.zeros(12, 3, 4))
    with pytest.raises(ValueError, match="no RGB axis"):
        as_frames_first(torch.zeros(12, 4, 8, 8))
    with pytest.raises(ValueError, match="dtype"):
        as_frames_first(torch.zeros(12, 3, 2, 2, dtype=torch.int32))


def test_reported_is_percent_mean_and_sample_std():
    mean, std = reported(np.array([0.2, 0.4, 0.6]))
    assert mean == pytest.approx(40.0)
    assert std == pytest.approx(20.0)  # sample std of 20, 40, 60
    assert reported(np.array([0.5])) == (50.0, 0.0)
