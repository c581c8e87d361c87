"""The `protocol` switch: one key sets every quirk where our pipeline can follow the authors' code
(asva_platform.experiment.PROTOCOLS), explicit keys win, and every record says which protocol it followed."""

from __future__ import annotations

from pathlib import Path

import pytest

from asva_platform import config as cfgmod
from asva_platform.compare import ComparedRun, Comparison, protocol_warning, render_page
from asva_platform.experiment import PROTOCOLS, ExperimentConfig, load_experiment
from asva_platform.storage import Storage
from tests.records import evaluation_record, version_1_record

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _quirks(cfg: ExperimentConfig) -> dict:
    return cfg.protocol_quirks()


def test_the_reproduction_recipe_follows_the_authors_everywhere():
    cfg = load_experiment(str(CONFIGS / "avsync15.yaml"))
    assert cfg.protocol == "authors" and _quirks(cfg) == PROTOCOLS["authors"]
    assert (
        cfg.sampling.frame_picking,
        cfg.sampling.resampler,
        cfg.generate.sampler,
        cfg.generate.audio_encoder_source,
        cfg.model.audio_encoder.drop_path_layout,
    ) == ("authors", "sinc", "authors", "imagebind", "authors")
    assert load_experiment(str(CONFIGS / "tiny.yaml")).protocol == "authors"  # its base's switch carries over


def test_the_clean_choices_are_the_defaults_and_the_toy_recipe():
    assert ExperimentConfig().protocol == "exact" and _quirks(ExperimentConfig()) == PROTOCOLS["exact"]
    assert load_experiment(str(CONFIGS / "toy.yaml")).protocol == "exact"
    assert load_experiment(None).protocol == "exact"


def test_one_override_switches_every_quirk_and_explicit_keys_win():
    recipe = str(CONFIGS / "avsync15.yaml")
    assert _quirks(load_experiment(recipe, ["protocol=exact"])) == PROTOCOLS["exact"]
    mixed = load_experiment(recipe, ["generate.sampler=standard"])
    assert mixed.generate.sampler == "standard" and mixed.sampling.frame_picking == "authors"
    assert mixed.protocol == "mixed"
    # an explicit key beats the switch wherever the switch is set
    assert load_experiment(recipe, ["protocol=exact", "sampling.resampler=sinc"]).sampling.resampler == "sinc"


def test_the_switch_in_replace_dotted_as_sweeps_apply_trials():
    base = load_experiment(str(CONFIGS / "avsync15.yaml"))
    assert cfgmod.replace_dotted(base, {"protocol": "exact"}).protocol == "exact"
    half = cfgmod.replace_dotted(base, {"protocol": "exact", "generate.sampler": "authors"})
    assert half.generate.sampler == "authors" and half.sampling.frame_picking == "exact"
    assert cfgmod.check_key_path(ExperimentConfig, "protocol") is str  # a valid sweep search-space key


def test_bad_choices_are_one_line_errors(tmp_path):
    with pytest.raises(cfgmod.ConfigError, match=r"protocol: must be one of authors, exact, got 'paper'"):
        load_experiment(None, ["protocol=paper"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  frame_picking: nearest\n")
    with pytest.raises(cfgmod.ConfigError, match="sampling.frame_picking"):
        load_experiment(str(bad))
    with pytest.raises(cfgmod.ConfigError, match="resampler"):
        type(ExperimentConfig().sampling)(resampler="sox")  # built in Python: checked too


def _run(label: str, protocol: str | None) -> ComparedRun:
    record = version_1_record() if protocol is None else evaluation_record(clips=[], protocol=protocol)
    return ComparedRun(label * 8, label, "0", {}, record)


def test_the_compare_page_warns_when_protocols_differ():
    a = _run("a", "authors")
    b = _run("b", "exact")
    assert protocol_warning([a, _run("c", "authors")]) == ""
    warning = protocol_warning([a, b])
    assert (
        "different protocols" in warning
        and "generate.sampler" in warning
        and "sampling.frame_picking" in warning
    )
    assert protocol_warning([b, _run("old", None)]) == ""  # records from before the switch were exact
    page, _ = render_page(Comparison([a, b]), Storage(), max_clips=0)
    assert 'class="warning"' in page and "not comparable" in page
