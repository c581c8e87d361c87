"""`eval.metrics.fid_batchnorm: authors`: the paper's FID-Inception is never put in eval mode, so its BatchNorm
uses each forward call's batch statistics; a call is one ground-truth video (its windows x 12 frames) or one
generated clip (12 frames), and frame 1's features are dropped afterwards (ASVA avgen/evaluations/eval.py)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from asva_model.metrics.compute import extract_clip_scores, summarize
from asva_model.metrics.fid import fid_inputs
from asva_model.metrics.networks import load_metric_networks
from asva_model.metrics.networks.tiny import save_tiny_metric_networks

F_ = 12


@pytest.fixture(scope="module")
def nets_and_cfg(tmp_path_factory):
    torch.manual_seed(0)
    cfg = save_tiny_metric_networks(tmp_path_factory.mktemp("tiny_metric_nets"))
    cfg = dataclasses.replace(cfg, metrics=["fid"], fid_image_size=96)
    return load_metric_networks(cfg), cfg


def _clips(seed: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(F_, 3, 32, 32, generator=g) for _ in range(n)]


def _scores(nets, cfg, gt, gen, videos, mode="authors"):
    return extract_clip_scores(
        gt,
        gen,
        [np.zeros(32000, np.float32)] * len(gt),
        ["x"] * len(gt),
        nets,
        dataclasses.replace(cfg, fid_batchnorm=mode),
        gt_videos=videos,
    )


def _train_mode_reference(net, frames: torch.Tensor, size: int) -> torch.Tensor:
    """One forward of the frames in train mode, written out with a copy of the network."""
    theirs = copy.deepcopy(net).train()
    with torch.no_grad():
        return theirs(fid_inputs(frames, size))


def test_authors_batching_one_call_per_gt_video_and_per_generated_clip(nets_and_cfg):
    nets, cfg = nets_and_cfg
    gt, gen = _clips(0, 4), _clips(1, 4)
    videos = ["a.mp4", "a.mp4", "a.mp4", "b.mp4"]  # three windows of one video, one of another
    s = _scores(nets, cfg, gt, gen, videos)
    assert s["fid_gt"].shape == s["fid_gen"].shape == (4, F_ - 1, s["fid_gt"].shape[-1])
    video_a = _train_mode_reference(nets.inception, torch.cat(gt[:3]), cfg.fid_image_size).unflatten(
        0, (3, F_)
    )
    np.testing.assert_allclose(s["fid_gt"][:3], video_a[:, 1:].numpy(), rtol=0, atol=1e-5)
    video_b = _train_mode_reference(nets.inception, gt[3], cfg.fid_image_size)
    np.testing.assert_allclose(s["fid_gt"][3], video_b[1:].numpy(), rtol=0, atol=1e-5)
    for i in range(4):
        clip = _train_mode_reference(nets.inception, gen[i], cfg.fid_image_size)
        np.testing.assert_allclose(s["fid_gen"][i], clip[1:].numpy(), rtol=0, atol=1e-5)


def test_batch_statistics_make_a_frames_features_depend_on_its_call(nets_and_cfg):
    nets, cfg = nets_and_cfg
    gt, gen = _clips(0, 3), _clips(1, 3)
    base = _scores(nets, cfg, gt, gen, ["a", "a", "b"])
    changed_first = [gt[0].clone()] + gt[1:]
    changed_first[0][0] = 1.0  # only frame 1 (the condition, not scored) of window 0
    moved = _scores(nets, cfg, changed_first, gen, ["a", "a", "b"])
    assert np.abs(moved["fid_gt"][1] - base["fid_gt"][1]).max() > 1e-4  # same call: window 1 moves
    np.testing.assert_array_equal(moved["fid_gt"][2], base["fid_gt"][2])  # another video: untouched
    # in eval mode a frame's features are its own: nothing else matters
    eval_base = _scores(nets, cfg, gt, gen, ["a", "a", "b"], mode="eval")
    eval_moved = _scores(nets, cfg, changed_first, gen, ["a", "a", "b"], mode="eval")
    np.testing.assert_allclose(eval_moved["fid_gt"][1], eval_base["fid_gt"][1], rtol=0, atol=1e-6)
    assert np.abs(eval_base["fid_gt"] - base["fid_gt"]).max() > 1e-2  # the two protocols differ
    # and the network is left as it was: eval mode, running statistics unchanged
    assert not nets.inception.training
    again = _scores(nets, cfg, gt, gen, ["a", "a", "b"], mode="eval")
    np.testing.assert_array_equal(again["fid_gt"], eval_base["fid_gt"])


def test_authors_fid_reaches_the_reported_number(nets_and_cfg):
    nets, cfg = nets_and_cfg
    gt, gen = _clips(0, 6), _clips(1, 6)
    videos = [f"v{i // 3}" for i in range(6)]
    authors = summarize(_scores(nets, cfg, gt, gen, videos), ["fid"])["FID"]
    clean = summarize(_scores(nets, cfg, gt, gen, videos, mode="eval"), ["fid"])["FID"]
    assert np.isfinite(authors) and np.isfinite(clean) and authors != pytest.approx(clean, rel=1e-3)
    with pytest.raises(ValueError, match="gt_videos has 2 entries for 6"):
        _scores(nets, cfg, gt, gen, ["a", "b"])
