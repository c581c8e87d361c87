"""MetricsConfig: documented fields, validation messages that name the key, YAML loading."""

from __future__ import annotations

import dataclasses

import pytest

from asva_model.errors import ConfigError
from asva_model.metrics.config import ALL_METRICS, MetricsConfig
from asva_platform.config import field_docs, from_dict


def test_defaults_are_the_paper_metrics_and_validate():
    cfg = MetricsConfig()
    assert tuple(cfg.metrics) == ALL_METRICS
    assert cfg.fid_image_size == 229 and cfg.fvd_image_size == 224
    assert cfg.required_networks() == ["inception", "i3d", "imagebind", "avsync"]


def test_every_field_has_a_docstring():
    docs = field_docs(MetricsConfig)
    assert {f.name for f in dataclasses.fields(MetricsConfig)} == set(docs)
    assert all(len(d) > 10 for d in docs.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": []}, "metrics: must name at least one"),
        ({"metrics": ["fid", "fid"]}, "metrics: has duplicates"),
        ({"metrics": ["fid", "kid"]}, "metrics: unknown metric 'kid'"),
        ({"inception_weights": ""}, "inception_weights: must be set to compute fid"),
        ({"imagebind_weights": ""}, "imagebind_weights: must be set to compute ia/it/alignsync"),
        ({"imagebind_bpe": ""}, "imagebind_bpe: must be set to compute it"),
        ({"avsync_classifier": ""}, "avsync_classifier: must be set to compute relsync/alignsync"),
        ({"imagebind_num_heads": [16, 16]}, "imagebind_num_heads: must be 3 positive ints"),
        ({"fid_image_size": 32}, "fid_image_size: must be >= 75"),
        ({"batch_size": 0}, "batch_size: must be >= 1"),
        ({"sync_shift_s": 0.25}, "sync_shift_s: must be >= 0.5 s, got 0.25"),
    ],
)
def test_validation_names_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(MetricsConfig(), **change)


def test_weights_of_unselected_metrics_are_not_required():
    cfg = MetricsConfig(
        metrics=["sync"],
        inception_weights="",
        i3d_weights="",
        imagebind_weights="",
        imagebind_bpe="",
        avsync_classifier="",
    )
    assert cfg.required_networks() == []
    assert MetricsConfig(metrics=["alignsync"]).required_networks() == ["imagebind", "avsync"]


def test_loads_through_the_platform_config_system():
    cfg = from_dict(MetricsConfig, {"metrics": ["fid", "sync"], "batch_size": 8})
    assert cfg.metrics == ["fid", "sync"] and cfg.batch_size == 8
    with pytest.raises(ConfigError, match="metrics\\[0\\]: must be one of"):
        from_dict(MetricsConfig, {"metrics": ["bogus"]})
