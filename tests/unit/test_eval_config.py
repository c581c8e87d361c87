"""The `eval` config section: documented fields, validation with the key named, nested metric settings."""

from __future__ import annotations

import dataclasses

import pytest

from asva_platform.config import ConfigError, field_docs
from asva_platform.evaluation.config import EvalConfig
from asva_platform.experiment import load_experiment


def test_every_eval_field_has_a_docstring():
    docs = field_docs(EvalConfig)
    missing = [f.name for f in dataclasses.fields(EvalConfig) if not docs.get(f.name)]
    assert not missing


def test_defaults_are_the_papers_protocol():
    experiment = load_experiment(None)
    e, g = experiment.eval, experiment.generate
    assert (g.audio_guidance_scale, g.text_guidance_scale, g.num_inference_steps, g.seed) == (4.0, 1.0, 50, 0)
    assert e.checkpoint == "init" and e.split == "test"
    # the paper's seven, AV-Align and the picture check (frame 0 vs the condition, colour drift): no network
    assert e.metrics.metrics == [
        "fid",
        "fvd",
        "ia",
        "it",
        "relsync",
        "alignsync",
        "sync",
        "avalign",
        "picture",
    ]


@pytest.mark.parametrize(
    "override, key",
    [
        ("generate.num_inference_steps=0", "generate.num_inference_steps"),
        ("generate.audio_guidance_scale=-1", "generate.audio_guidance_scale"),
        ("eval.num_workers=-2", "eval.num_workers"),
        ("eval.cpus_per_worker=0", "eval.cpus_per_worker"),
        ("eval.checkpoint=", "eval.checkpoint"),
        ("eval.device=tpu", "eval.device"),
        ("eval.log_to=elsewhere", "eval.log_to"),
        ("eval.metrics.metrics=[fid, psnr]", "eval.metrics.metrics"),
        ("eval.metrics.fid_image_size=10", "eval.metrics.fid_image_size"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_experiment(None, [override])


def test_nested_metric_settings_override():
    e = load_experiment(
        None, ["eval.metrics.metrics=[sync]", "eval.metrics.fvd_image_size=64", "eval.parallel=false"]
    ).eval
    assert e.metrics.metrics == ["sync"] and e.metrics.fvd_image_size == 64 and e.parallel is False
