"""Sweep files are validated with the typed-config rules before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from asva_platform.config import ConfigError
from sweeps.spec import SEED_KEY, grid_size, load_sweep, representative_values, swept_keys, tune_search_space

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


@pytest.mark.parametrize("name", sorted(p.name for p in SWEEPS.glob("*.yaml")))
def test_shipped_sweeps_are_valid(name):
    loaded = load_sweep(SWEEPS / name, ["checkpoint=s3://asva/runs/x"])
    assert loaded.spec.search_space
    first = {k: representative_values(d)[0] for k, d in loaded.spec.search_space.items()}
    trial = loaded.trial_config(first)
    for key, value in first.items():
        section, _, leaf = key.rpartition(".")
        node = trial
        for part in section.split("."):
            node = getattr(node, part)
        assert getattr(node, leaf) == value


def test_guidance_grid_counts_trials():
    loaded = load_sweep(SWEEPS / "guidance_scale.yaml", ["checkpoint=run123"])
    assert grid_size(loaded.spec) == 5 and loaded.spec.kind == "guidance"


def write(tmp_path, body: str) -> Path:
    (tmp_path / "base.yaml").write_text("name: b\n")
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nkind: train\nbase_config: base.yaml\n" + body)
    return path


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "search_space:\n  train.lrr: {choice: [1.0]}\n",
            "search_space.train.lrr: unknown key (did you mean 'lr'?)",
        ),
        ("search_space:\n  train.lr: {choice: [-1.0]}\n", "search_space.train.lr: value -1.0 is invalid"),
        ("search_space:\n  train.zero_stage: {grid: [2, 4]}\n", "value 4 is invalid"),
        ("search_space:\n  train.lr: {normal: [0, 1]}\n", "search_space.train.lr: expected one of"),
        ("search_space:\n  train.lr: {loguniform: [0, 1]}\n", "bounds must be > 0"),
        ("search_space:\n  train.lr: {uniform: [2, 1]}\n", "low must be < high"),
        ("search_space: {}\n", "search_space: must have at least one key"),
        ("search_space:\n  train.lr: {choice: [1.0e-4]}\nbogus: 1\n", "bogus: unknown key"),
        ("search_space:\n  train.lr: {choice: [1.0e-4]}\nsearch: grid\n", "`grid` needs grid distributions"),
        ("search_space:\n  train.lr: {choice: [1.0e-4]}\nseeds: [0, 1]\n", "seeds: only guidance sweeps"),
        (
            "search_space:\n  train.lr: {choice: [1.0e-4]}\npoints_to_evaluate: [{train.wd: 1.0}]\n",
            "points_to_evaluate[0]: must map search-space keys to values, got {'train.wd': 1.0} (train.wd not in",
        ),
        (
            "search_space:\n  train.lr: {choice: [1.0e-4]}\npoints_to_evaluate: [{train.lr: -1.0}]\n",
            "points_to_evaluate[0]: train.lr",
        ),
        (
            "search_space:\n  train.lr: {grid: [1.0e-4]}\nsearch: grid\npoints_to_evaluate: [{train.lr: 1.0}]\n",
            "points_to_evaluate: a grid already lists every setting",
        ),
        (
            "search_space:\n  train.lr: {choice: [1.0e-4]}\nmetric: Sync\n",
            "metric: Sync is not reported by every train trial",
        ),
    ],
)
def test_bad_sweeps_fail_with_one_line(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_guidance_sweep_needs_a_checkpoint(tmp_path):
    path = write(tmp_path, "search_space:\n  generate.audio_guidance_scale: {grid: [1.0]}\n")
    path.write_text(path.read_text().replace("kind: train", "kind: guidance"))
    with pytest.raises(ConfigError, match="checkpoint: a guidance sweep needs"):
        load_sweep(path)
    assert load_sweep(path, ["checkpoint=abc"]).spec.checkpoint == "abc"


def test_base_overrides_reach_the_base_config():
    loaded = load_sweep(SWEEPS / "train_tiny.yaml", ["base.train.max_steps=6", "num_samples=2"])
    assert loaded.base.train.max_steps == 6 and loaded.spec.num_samples == 2


def test_seeds_are_a_grouped_seed_dimension_of_guidance_sweeps():
    over = ["checkpoint=run123", "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}}"]
    loaded = load_sweep(SWEEPS / "guidance_scale_tiny.yaml", [*over, "seeds=[0, 1, 2]"])
    spec = loaded.spec
    assert spec.search_space[SEED_KEY] == {"grid": [0, 1, 2]} and swept_keys(spec) == [
        "generate.audio_guidance_scale"
    ]
    assert grid_size(spec) == 6
    assert tune_search_space(spec)[SEED_KEY] == {"grid_search": [0, 1, 2]}
    assert loaded.trial_config({"generate.audio_guidance_scale": 4.0, SEED_KEY: 2}).generate.seed == 2
    # the same seeds written as a search dimension: the same spec
    same = load_sweep(
        SWEEPS / "guidance_scale_tiny.yaml",
        [
            "checkpoint=run123",
            "search_space={generate.audio_guidance_scale: {grid: [1.0, 4.0]}, generate.seed: {grid: [0, 1, 2]}}",
        ],
    )
    assert same.spec.search_space == spec.search_space
    for bad, message in [
        ("seeds=[0, 0]", "seeds: must be distinct"),
        ("seeds=[-1]", "seeds: must be integers >= 0"),
        ("seeds=[0.5]", r"seeds\[0\]: expected an integer"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_sweep(SWEEPS / "guidance_scale_tiny.yaml", [*over, bad])
    with pytest.raises(ConfigError, match="not both"):
        load_sweep(
            SWEEPS / "guidance_scale_tiny.yaml",
            [
                "checkpoint=run123",
                "seeds=[0, 1]",
                "search_space={generate.audio_guidance_scale: {grid: [1.0]}, generate.seed: {grid: [3]}}",
            ],
        )


def test_a_train_sweep_that_evaluates_may_optimize_and_plot_the_evaluations_metrics(tmp_path):
    body = "search_space:\n  train.lr: {choice: [1.0e-4]}\nmetric: Sync\nplot_metrics: [Frame0_PSNR]\n"
    path = write(tmp_path, body + "evaluate: true\n")
    spec = load_sweep(path).spec
    assert (spec.metric, spec.mode, spec.evaluate) == ("Sync", "max", True)
    guidance = write(tmp_path, "search_space:\n  generate.seed: {grid: [0]}\nevaluate: true\ncheckpoint: x\n")
    guidance.write_text(guidance.read_text().replace("kind: train", "kind: guidance"))
    with pytest.raises(ConfigError, match="evaluate: only train sweeps evaluate their trials"):
        load_sweep(guidance)


def test_the_audio_gap_is_an_asha_metric_when_every_report_validates():
    loaded = load_sweep(SWEEPS / "toy_recipe.yaml")
    assert (loaded.spec.metric, loaded.spec.mode) == ("val_loss_gap_t", "max")
    with pytest.raises(ConfigError, match="val_loss_gap_t is not reported"):
        load_sweep(SWEEPS / "toy_recipe.yaml", ["base.train.log_every=20"])  # reports without validation
