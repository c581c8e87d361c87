"""compute_metrics end to end on tiny random-init networks loaded from the real file formats."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asva_model.data.audio import waveform_to_mel
from asva_model.data.config import SamplingConfig
from asva_model.metrics.catalogue import NUM_CLIPS, reported_keys
from asva_model.metrics.compute import (
    ClipScores,
    compute_metrics,
    extract_clip_scores,
    per_class_metrics,
    summarize,
)
from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.networks import MetricNetworks, load_metric_networks
from asva_model.metrics.networks.tiny import save_tiny_metric_networks

SR, FPS, N_CLIPS = 16000, 6.0, 4
PROMPTS = ["dog_barking", "dog_barking", "lions_roaring", "lions_roaring"]


def _clip_and_audio(seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """12 frames (32x32) of a square that jumps at random frames, with a click in the audio at each jump."""
    rng = np.random.default_rng(seed)
    frames = torch.full((12, 3, 32, 32), 0.2)
    jumps = sorted(rng.choice(np.arange(2, 11), size=3, replace=False))
    audio = rng.normal(scale=0.005, size=int(2 * SR)).astype(np.float32)
    y = 4
    for k in range(12):
        if k in jumps:
            y = (y + 10) % 24
            start = int(k / FPS * SR)
            audio[start : start + 400] += np.hanning(400).astype(np.float32) * np.sign(rng.normal(size=400))
        frames[k, :, y : y + 8, 8:16] = torch.tensor([0.9, 0.5, 0.1]).view(3, 1, 1)
    return frames, audio


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = save_tiny_metric_networks(tmp_path_factory.mktemp("tiny_nets"))
    # Smaller resize targets than the paper's 229/224 keep this fast; the code path is the same.
    cfg = dataclasses.replace(cfg, fid_image_size=80, fvd_image_size=64)
    nets = load_metric_networks(cfg)
    pairs = [_clip_and_audio(s) for s in range(N_CLIPS)]
    gt = [c for c, _ in pairs]
    audio = [a for _, a in pairs]
    gen = [_clip_and_audio(s + 100)[0] for s in range(N_CLIPS)]
    scores = extract_clip_scores(gt, gen, audio, PROMPTS, nets, cfg, sample_rate=SR, fps=FPS)
    return cfg, nets, gt, gen, audio, scores


def test_every_metric_is_extracted_with_per_clip_shapes(setup):
    cfg, nets, *_, scores = setup
    assert len(scores) == N_CLIPS
    d_fid = nets.inception.feature_dim
    expected = {
        "fid_gt": (4, 11, d_fid),
        "fid_gen": (4, 11, d_fid),
        "fvd_gt": (4, 16),
        "fvd_gen": (4, 16),
        "ia": (4, 11),
        "it": (4, 11),
        "ia_gt_first": (4,),
        "phi_gt": (4,),
        "phi_gen": (4,),
        "sync": (4,),
        "sync_lag_s": (4,),
        "sync_lag_gt_s": (4,),
        "sync_gt": (4,),
        "sync_shifted": (4,),
        "av_align": (4,),
        "av_align_shifted": (4,),
        "av_align_gt": (4,),
        "frame0_psnr": (4,),
        "colour_error": (4, 3),
        "colour_drift": (4, 3),
    }
    assert {k: v.shape for k, v in scores.arrays.items()} == expected
    out = summarize(scores, cfg.metrics)
    for key in (
        "FID",
        "FVD",
        "IA",
        "IT",
        "RelSync",
        "AlignSync",
        "Sync",
        "Sync_gt",
        "SyncLag_s",
        "SyncLead_s",
        "Sync_shifted",
        "Sync_ci_low",
        "Sync_ci_high",
        "Sync_win_rate",
        "Sync_win_rate_ci_low",
        "Sync_win_rate_ci_high",
    ):
        assert np.isfinite(out[key]), key
    assert out["FID"] > 0 and out["FVD"] > 0
    assert 0 < out["RelSync"] < 100 and 0 < out["AlignSync"] < out["RelSync"]


def test_generating_the_ground_truth_scores_as_the_ground_truth(setup):
    cfg, nets, gt, _, audio, _ = setup
    as_cnhw = [c.permute(1, 0, 2, 3) for c in gt]  # the other accepted layout
    cfg = dataclasses.replace(cfg, metrics=["fid", "fvd", "relsync", "sync"])
    out = compute_metrics(gt, as_cnhw, audio, PROMPTS, nets, cfg, sample_rate=SR, fps=FPS)
    assert abs(out["FID"]) < 1e-6 and abs(out["FVD"]) < 1e-6
    assert out["RelSync"] == pytest.approx(50.0) and out["RelSync_std"] == pytest.approx(0.0)
    assert out["Sync"] == pytest.approx(out["Sync_gt"])


def test_image_metrics_skip_the_first_frame_and_video_metrics_do_not(setup):
    cfg, nets, gt, gen, audio, scores = setup
    changed = [c.clone() for c in gen]
    for c in changed:
        c[0] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(7))
    cfg = dataclasses.replace(cfg, metrics=["fid", "fvd", "ia", "it", "relsync"])
    again = extract_clip_scores(gt, changed, audio, PROMPTS, nets, cfg, sample_rate=SR, fps=FPS)
    for name in ("fid_gen", "ia", "it"):
        np.testing.assert_allclose(again[name], scores[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(again["fvd_gen"], scores["fvd_gen"])
    assert not np.allclose(again["phi_gen"], scores["phi_gen"])


def test_ia_and_it_equal_a_direct_imagebind_computation(setup):
    cfg, nets, _, gen, audio, scores = setup
    emb = nets.imagebind
    frames = F.interpolate(gen[2][1:], size=(224, 224), mode="bicubic", antialias=True)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    mel = torch.from_numpy(waveform_to_mel(audio[2], SamplingConfig()))[None]
    with torch.no_grad():
        img = emb.embed_image((frames - mean) / std)
        ia = (img @ emb.embed_audio(mel)[0]).numpy()
        it = (img @ emb.embed_text(["lions_roaring"])[0]).numpy()
    np.testing.assert_allclose(scores["ia"][2], ia, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores["it"][2], it, rtol=1e-4, atol=1e-5)


def test_reported_numbers_follow_from_the_per_clip_scores(setup):
    cfg, *_, scores = setup
    out = summarize(scores, cfg.metrics)
    assert out["IA"] == pytest.approx(100 * scores["ia"].mean())
    rel = 1 / (1 + np.exp(scores["phi_gt"] - scores["phi_gen"]))
    p_align = (1 / (1 + np.exp(scores["ia_gt_first"][:, None] - scores["ia"]))).mean(axis=1)
    assert out["RelSync"] == pytest.approx(100 * rel.mean())
    assert out["AlignSync"] == pytest.approx(100 * (rel * p_align).mean())


@pytest.mark.parametrize("metric", ["fid", "fvd", "ia", "it", "relsync", "alignsync", "sync"])
def test_the_declared_names_are_what_each_metric_reports(setup, metric):
    # sweeps validate their objective against the catalogue: it must be exactly what summarize returns
    *_, scores = setup
    assert set(summarize(scores, [metric])) - {NUM_CLIPS} == set(reported_keys([metric]))


def test_shards_concatenate_to_the_whole(setup):
    cfg, nets, gt, gen, audio, scores = setup
    cfg_fast = dataclasses.replace(cfg, metrics=["fid", "fvd", "relsync"])
    parts = [
        extract_clip_scores(gt[a:b], gen[a:b], audio[a:b], PROMPTS[a:b], nets, cfg_fast, sample_rate=SR)
        for a, b in ((0, 1), (1, 4))
    ]
    joined = summarize(ClipScores.concat(parts), cfg_fast.metrics)
    whole = summarize(scores, cfg_fast.metrics)
    for key in ("FID", "FVD", "RelSync"):
        assert joined[key] == pytest.approx(whole[key], rel=1e-6), key


def test_per_class_table(setup):
    cfg, *_, scores = setup
    table = per_class_metrics(scores, [p.split("_")[0] for p in PROMPTS], cfg.metrics)
    assert list(table) == ["dog", "lions"]
    assert table["dog"]["num_clips"] == 2 and "FVD" in table["dog"] and "FID" in table["dog"]


def test_generated_audio_only_affects_the_generated_side(setup):
    cfg, nets, gt, gen, audio, scores = setup
    silent = [np.zeros_like(a) for a in audio]
    cfg_av = dataclasses.replace(cfg, metrics=["alignsync"])
    again = extract_clip_scores(gt, gen, audio, PROMPTS, nets, cfg_av, sample_rate=SR, gen_audio=silent)
    np.testing.assert_allclose(again["phi_gt"], scores["phi_gt"], rtol=1e-5)
    np.testing.assert_allclose(again["ia_gt_first"], scores["ia_gt_first"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(again["phi_gen"], scores["phi_gen"])
    assert not np.allclose(again["ia"], scores["ia"])


def test_longer_audio_is_centre_cropped_to_the_window(setup):
    cfg, nets, gt, gen, audio, scores = setup
    rng = np.random.default_rng(1)
    pad = int(0.25 * SR)
    longer = [
        np.concatenate([rng.normal(size=pad), a, rng.normal(size=pad)]).astype(np.float32) for a in audio
    ]
    again = extract_clip_scores(
        gt, gen, longer, PROMPTS, nets, dataclasses.replace(cfg, metrics=["ia"]), sample_rate=SR
    )
    np.testing.assert_allclose(again["ia"], scores["ia"], rtol=1e-5, atol=1e-6)


def test_the_weights_free_sync_metric_needs_no_networks(setup):
    _, _, gt, gen, audio, scores = setup
    out = compute_metrics(
        gt,
        gen,
        audio,
        PROMPTS,
        MetricNetworks(),
        dataclasses.replace(setup[0], metrics=["sync"]),
        sample_rate=SR,
        fps=FPS,
    )
    assert set(out) == {
        "num_clips",
        "Sync",
        "Sync_gt",
        "SyncLag_s",
        "SyncLead_s",
        "Sync_ci_low",
        "Sync_ci_high",
        "Sync_shifted",
        "Sync_win_rate",
        "Sync_win_rate_ci_low",
        "Sync_win_rate_ci_high",
    }
    assert out["Sync_gt"] == pytest.approx(scores["sync_gt"].mean())
    assert out["Sync_shifted"] == pytest.approx(scores["sync_shifted"].mean())
    assert out["Sync_win_rate"] == pytest.approx(np.mean(scores["sync"] > scores["sync_shifted"]))


def test_the_sync_control_tells_a_clip_that_follows_its_audio_from_a_static_or_noise_clip():
    n = 12
    clips, audio = zip(*(_clip_and_audio(s) for s in range(n)))
    still = [c[:1].expand_as(c).clone() for c in clips]  # the first frame held: nothing moves
    rng = torch.Generator().manual_seed(3)
    noise = [torch.rand(c.shape, generator=rng) for c in clips]
    cfg = MetricsConfig(metrics=["sync"])

    def summary(gen):
        scores = extract_clip_scores(
            clips, gen, audio, [""] * n, MetricNetworks(), cfg, sample_rate=SR, fps=FPS
        )
        return summarize(scores, cfg.metrics)

    follows, static, random = summary(clips), summary(still), summary(noise)
    assert follows["Sync_win_rate"] == 1.0 and follows["Sync_win_rate_ci_low"] > 0.5
    assert follows["Sync_ci_low"] > follows["Sync_shifted"]
    assert static["Sync_win_rate"] == 0.0 and static["Sync_win_rate_ci_high"] < 0.5
    # noise motion syncs no better with its own audio than with the shifted one
    assert random["Sync_ci_low"] < random["Sync_shifted"] < random["Sync_ci_high"]
    assert random["Sync_win_rate_ci_low"] < 0.5 < random["Sync_win_rate_ci_high"]


def test_the_shift_must_be_shorter_than_the_audio(setup):
    _, _, gt, gen, audio, scores = setup
    cfg = MetricsConfig(metrics=["sync"], sync_shift_s=0.5)
    half = extract_clip_scores(gt, gen, audio, PROMPTS, MetricNetworks(), cfg, sample_rate=SR, fps=FPS)
    np.testing.assert_array_equal(half["sync"], scores["sync"])  # the shift changes only the control
    assert not np.array_equal(half["sync_shifted"], scores["sync_shifted"])
    with pytest.raises(
        ValueError, match=r"sync_shift_s 2.0 s \(32000 samples\) must be > 0 and shorter than the audio"
    ):
        extract_clip_scores(
            gt,
            gen,
            audio,
            PROMPTS,
            MetricNetworks(),
            dataclasses.replace(cfg, sync_shift_s=2.0),
            sample_rate=SR,
            fps=FPS,
        )


def test_bad_inputs_are_clear_errors(setup):
    cfg, nets, gt, gen, audio, _ = setup
    with pytest.raises(ValueError, match="gen_clips has 3 entries for 4 gt_clips"):
        extract_clip_scores(gt, gen[:3], audio, PROMPTS, nets, cfg)
    with pytest.raises(ValueError, match="12 frames but generated clips have 11"):
        extract_clip_scores(gt, [c[:11] for c in gen], audio, PROMPTS, nets, cfg)
    with pytest.raises(ValueError, match="needs the imagebind network"):
        extract_clip_scores(
            gt,
            gen,
            audio,
            PROMPTS,
            dataclasses.replace(nets, imagebind=None),
            dataclasses.replace(cfg, metrics=["ia"]),
        )
    with pytest.raises(ValueError, match="mono 1-D"):
        extract_clip_scores(
            gt, gen, [np.zeros((2, 100))] * 4, PROMPTS, nets, dataclasses.replace(cfg, metrics=["ia"])
        )
    with pytest.raises(ValueError, match="no clips"):
        extract_clip_scores([], [], [], [], nets, cfg)
