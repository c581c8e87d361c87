"""evaluate_checkpoint in this process (no Ray): mp4 outputs, re-decoding, records, and resuming."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from asva_model.data.sampling import sample_clip
from asva_platform.artifacts.evaluation import RECORD_FILE, SCORES_FILE, EvaluationRecord
from asva_platform.dev.fixtures import tiny_eval_overrides
from asva_platform.errors import UserError
from asva_platform.evaluation.job import evaluate_checkpoint
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # 32x32 frames keep this CPU test short; the 64x64 end-to-end run is tests/integration/test_evaluate.py.
    overrides = tiny_eval_overrides(tmp_path_factory.getbasetemp() / "eval_inputs", image_size=32)
    store = tmp_path_factory.mktemp("store")
    cfg = load_experiment(
        None,
        overrides
        + [
            f"storage.root={store}",
            "eval.max_videos=1",
            "eval.metrics.metrics=[sync]",
            "eval.parallel=false",
        ],
    )
    first = evaluate_checkpoint(cfg, log=lambda _: None)
    again = evaluate_checkpoint(cfg, log=lambda _: None)
    return cfg, overrides, first.record, again.record, first, again


def _decode(path: str):
    with av.open(path) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate, fps = a.rate, float(v.average_rate)
    with av.open(path) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    return np.stack(frames), fps, rate, samples


def test_generated_clips_are_mp4_with_12_frames_and_2s_of_audio(run):
    _, _, first, _, result, _ = run
    assert len(first.clips) == 3 and result.clips_generated == 3
    for clip in first.clips:
        frames, fps, rate, samples = _decode(clip.video_uri)
        assert frames.shape == (12, 32, 32, 3)
        assert fps == 6.0 and rate == 16000
        assert (
            abs(samples / rate - 2.0) < 0.07
        )  # AAC frames are 1024 samples; the track covers the 2 s window


def test_ground_truth_mp4_is_the_protocol_window(run):
    cfg, overrides, first, _, _, _ = run
    root = Path(next(o for o in overrides if o.startswith("dataset.root=")).split("=", 1)[1])
    for clip in first.clips:
        window = sample_clip(root / "videos" / clip.video, clip.start, cfg.sampling)
        stored = sample_clip(clip.gt_uri, 0.0, cfg.sampling)
        assert np.abs(stored.frames - window.frames).mean() < 0.03  # equal up to H.264
        assert np.corrcoef(stored.waveform, window.waveform)[0, 1] > 0.9  # equal up to AAC


def test_record_scores_and_metrics(run):
    cfg, _, first, _, result, _ = run
    storage = Storage()
    record = EvaluationRecord.from_json(storage.read_json(f"{first.eval_uri}/{RECORD_FILE}"))
    assert record == first  # the record written is the one returned, through its JSON
    assert (
        record.name == "init_audio_guidance_scale=4_text_guidance_scale=1_num_inference_steps=2_seed=0_exact"
    )
    assert (
        record.protocol == "exact"
        and record.quirks == cfg.protocol_quirks()
        and record.generate == cfg.generate
    )
    assert "protocol exact" in result.summary_line()
    assert set(first.metrics) == {
        "num_clips",
        "Sync",
        "Sync_ci_low",
        "Sync_ci_high",
        "Sync_shifted",
        "Sync_win_rate",
        "Sync_win_rate_ci_low",
        "Sync_win_rate_ci_high",
        "Sync_gt",
        "SyncLag_s",
        "SyncLead_s",
    }
    assert first.metrics["num_clips"] == 3
    with np.load(f"{first.eval_uri}/{SCORES_FILE}") as scores:
        assert scores["sync"].shape == (3,) and list(scores["clip_names"]) == [c.name for c in first.clips]
        assert list(scores["clip_classes"]) == [c.class_dir for c in first.clips]  # a sweep's per-class table
        assert first.metrics["Sync"] == pytest.approx(float(scores["sync"].mean()))
        assert first.metrics["Sync_shifted"] == pytest.approx(float(scores["sync_shifted"].mean()))
        assert first.metrics["Sync_win_rate"] == pytest.approx(
            float(np.mean(scores["sync"] > scores["sync_shifted"]))
        )
    m = first.metrics
    assert m["Sync_ci_low"] <= m["Sync"] <= m["Sync_ci_high"]
    assert 0 <= m["Sync_win_rate_ci_low"] <= m["Sync_win_rate"] <= m["Sync_win_rate_ci_high"] <= 1
    # the console line shows each interval next to its value, not as metrics of their own
    line = result.summary_line()
    assert f"Sync {m['Sync']:.4g} [{m['Sync_ci_low']:.4g}, {m['Sync_ci_high']:.4g}]" in line
    assert "_ci_" not in line and "Sync_win_rate " in line and "Sync_shifted " in line
    (cls,) = first.per_class
    assert first.per_class[cls]["num_clips"] == 3 and cls == first.clips[0].class_dir


def test_rerun_reuses_the_written_clips(run):
    _, _, first, again, result, rerun = run
    assert again.eval_uri == first.eval_uri and rerun.clips_generated == 0
    assert again.metrics == first.metrics


@pytest.mark.parametrize(
    "override, name",
    [
        (
            "generate.audio_guidance_scale=8",
            "init_audio_guidance_scale=8_text_guidance_scale=1_num_inference_steps=2_seed=0_exact",
        ),
        (
            "protocol=authors",  # another protocol: another evaluation
            "init_audio_guidance_scale=4_text_guidance_scale=1_num_inference_steps=2_seed=0_authors",
        ),
    ],
)
def test_a_different_setting_is_a_different_evaluation(run, override, name):
    cfg, overrides, first, _, _, _ = run
    from asva_platform.evaluation.job import prepare

    other = load_experiment(
        None, overrides + [f"storage.root={cfg.storage.root}", "eval.max_videos=1", override]
    )
    prep = prepare(other, log=lambda _: None)
    assert prep.eval_id != first.eval_id and prep.name == name


def test_a_sync_shift_as_long_as_the_clip_fails_before_any_work(run, tmp_path):
    _, overrides, *_ = run
    bad = load_experiment(
        None,
        overrides
        + [f"storage.root={tmp_path}", "eval.metrics.metrics=[sync]", "eval.metrics.sync_shift_s=2.0"],
    )
    with pytest.raises(
        UserError, match=r"eval.metrics.sync_shift_s: must be below sampling.clip_duration \(2 s\)"
    ):
        evaluate_checkpoint(bad, parallel=False, log=lambda _: None)
    assert not (tmp_path / "evals").exists() or not any((tmp_path / "evals").iterdir())


def test_missing_metric_weights_fail_before_any_work(run, tmp_path):
    cfg, overrides, *_ = run
    bad = load_experiment(
        None,
        overrides
        + [
            f"storage.root={tmp_path}",
            "eval.metrics.metrics=[fvd]",
            f"eval.metrics.i3d_weights={tmp_path}/none.pt",
        ],
    )
    with pytest.raises(UserError, match="eval.metrics.i3d_weights"):
        evaluate_checkpoint(bad, parallel=False, log=lambda _: None)
    assert not (tmp_path / "evals").exists() or not any((tmp_path / "evals").iterdir())
