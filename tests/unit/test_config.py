"""The config system: YAML -> typed dataclasses, dotted overrides, one-line errors naming file and key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asva_platform import config as cfg
from asva_platform.experiment import ExperimentConfig, load_experiment

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_recipe_has_the_papers_values():
    c = load_experiment(CONFIGS / "avsync15.yaml")
    assert c.sampling.image_size == [256, 256] and c.sampling.num_frames == 12 and c.sampling.fps == 6.0
    assert c.train.batch_size_per_worker * c.train.num_workers * c.train.gradient_accumulation_steps == 64
    assert (c.train.lr, c.train.weight_decay, c.train.grad_clip) == (1e-4, 1e-2, 1.0)
    assert c.model.audio_cond_drop_prob == 0.2
    assert (c.generate.audio_guidance_scale, c.generate.num_inference_steps) == (4.0, 50)
    assert c.model.unet.block_out_channels == [320, 640, 1280, 1280]


def test_tiny_inherits_from_base_and_overrides():
    c = load_experiment(CONFIGS / "tiny.yaml")
    assert c.name == "tiny"
    assert c.sampling.image_size == [64, 64]
    assert c.sampling.num_frames == 12  # inherited from avsync15.yaml
    assert c.train.num_workers == 2 and not c.train.use_gpu


def test_dotted_overrides_are_typed(tmp_path):
    c = load_experiment(
        CONFIGS / "tiny.yaml",
        ["train.lr=2e-4", "model.audio_cond_drop_prob=0.1", "sampling.image_size=[32, 48]", "name=run-7"],
    )
    assert c.train.lr == pytest.approx(2e-4) and isinstance(c.train.lr, float)
    assert c.model.audio_cond_drop_prob == 0.1
    assert c.sampling.image_size == [32, 48]
    assert c.name == "run-7"
    # String keys keep the text as typed: YAML would read these as a number / a bool.
    c = load_experiment(CONFIGS / "tiny.yaml", ["eval.checkpoint=123e4567", "name=yes"])
    assert c.eval.checkpoint == "123e4567" and c.name == "yes"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  lrr: 1.0\n", "train.lrr: unknown key (did you mean 'lr'?)"),
        ("train:\n  num_workers: two\n", "train.num_workers: expected an integer, got 'two'"),
        ("train:\n  zero_stage: 4\n", "train.zero_stage: must be 0, 1, 2 or 3, got 4"),
        ("train:\n  lr: -1\n", "train.lr: must be > 0, got -1.0"),
        ("train:\n  precision: fp8\n", "train.precision: must be one of 'fp32', 'fp16', 'bf16', got 'fp8'"),
        (
            "sampling:\n  image_size: [250, 256]\n",
            "sampling.image_size: must be [height, width], multiples of 8",
        ),
        ("model:\n  audio_cond_drop_prob: 1.5\n", "model.audio_cond_drop_prob: must be in [0, 1], got 1.5"),
        ("train: 3\n", "train: expected a mapping (section), got 3"),
        ("bogus_section: {}\n", "bogus_section: unknown key"),
        ("train:\n  use_gpu: 'yes'\n", "train.use_gpu: expected true/false, got 'yes'"),
        (
            "sampling:\n  num_mel_bins: 64\n",
            "sampling.num_mel_bins: 64 != model.audio_encoder.num_mel_bins 128",
        ),
    ],
)
def test_bad_values_give_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as info:
        load_experiment(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert expected in msg


def test_unknown_override_key_is_rejected_before_loading():
    with pytest.raises(cfg.ConfigError, match=r"train\.nope: unknown key"):
        load_experiment(CONFIGS / "tiny.yaml", ["train.nope=1"])
    with pytest.raises(cfg.ConfigError, match="expected key.path=value"):
        load_experiment(CONFIGS / "tiny.yaml", ["train.lr"])


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(cfg.ConfigError, match="config file not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = write(tmp_path, "train: [1,\n")
    with pytest.raises(cfg.ConfigError, match="invalid YAML"):
        load_experiment(bad)


def test_dump_round_trips(tmp_path):
    c = load_experiment(CONFIGS / "tiny.yaml", ["train.lr=3e-4"])
    for with_docs in (False, True):
        text = cfg.dump_yaml(c, with_docs=with_docs)
        again = cfg.from_dict(ExperimentConfig, yaml.safe_load(text), "dump")
        assert again == c


def test_every_field_has_a_docstring():
    missing = []

    def walk(cls, prefix):
        docs = cfg.field_docs(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if not docs.get(f.name):
                missing.append(key)
            tp = cfg._hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")

    walk(ExperimentConfig, "")
    assert missing == []


def test_flatten_gives_dotted_params():
    flat = cfg.flatten(load_experiment(CONFIGS / "tiny.yaml"))
    assert flat["train.lr"] == 1e-4
    # The tiny geometry (configs/model/tiny.yaml) is what gets logged, not the full-size defaults.
    assert flat["model.unet.block_out_channels"] == [32, 64]


def test_replace_dotted_revalidates():
    c = load_experiment(CONFIGS / "tiny.yaml")
    d = cfg.replace_dotted(c, {"generate.audio_guidance_scale": 8})
    assert d.generate.audio_guidance_scale == 8.0 and c.generate.audio_guidance_scale == 4.0
    with pytest.raises(cfg.ConfigError, match="train.zero_stage"):
        cfg.replace_dotted(c, {"train.zero_stage": 5})


def test_cli_bad_config_is_one_line_without_traceback(tmp_path):
    path = write(tmp_path, "train:\n  zero_stage: 4\n")
    out = subprocess.run(
        [sys.executable, "-m", "asva_platform.cli", "config", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {path}: train.zero_stage: must be 0, 1, 2 or 3, got 4"
    assert "Traceback" not in out.stderr


def test_stdlib_platform_module_is_not_shadowed():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0 and out.stdout.strip() == "Linux"


def test_a_section_built_in_python_is_validated_too():
    from asva_platform.training.config import TrainConfig

    with pytest.raises(cfg.ConfigError, match=r"^lr: must be > 0"):
        TrainConfig(lr=-1)
    # through the loader the same check names the section's key path and the file
    with pytest.raises(cfg.ConfigError, match=r"<dict>: train\.lr: must be > 0"):
        cfg.from_dict(ExperimentConfig, {"train": {"lr": -1}})
    with pytest.raises(cfg.ConfigError, match=r"^storage\.root|^root: must not be empty"):
        ExperimentConfig(storage=dataclasses.replace(ExperimentConfig().storage, root=""))


def test_base_may_be_a_list_merged_in_order(tmp_path):
    write(tmp_path, "name: a\ntrain:\n  lr: 0.1\n  max_steps: 5\n", "a.yaml")
    write(tmp_path, "name: b\ntrain:\n  lr: 0.2\n", "b.yaml")
    path = write(tmp_path, "base: [a.yaml, b.yaml]\ntrain:\n  max_steps: 7\n")
    c = load_experiment(path)
    assert (c.name, c.train.lr, c.train.max_steps) == ("b", 0.2, 7)
    with pytest.raises(cfg.ConfigError, match="base: expected a file path or a list"):
        load_experiment(write(tmp_path, "base: 3\n", "bad.yaml"))


def test_tiny_geometry_is_written_once_and_reaches_the_recipes():
    tiny = cfg.load_raw(CONFIGS / "model" / "tiny.yaml")["model"]
    for recipe in ("tiny.yaml", "toy.yaml"):
        model = load_experiment(CONFIGS / recipe).model
        assert model.unet.block_out_channels == tiny["unet"]["block_out_channels"]
        assert model.audio_encoder.embed_dim == tiny["audio_encoder"]["embed_dim"]


def test_every_one_line_error_shares_one_base():
    from asva_model.data.errors import BadClipError
    from asva_model.errors import AsvaError
    from asva_platform.dev.stack import StackError
    from asva_platform.errors import UserError
    from asva_platform.storage import StorageError
    from asva_platform.tracking import TrackingError

    for error in (cfg.ConfigError, UserError, StorageError, TrackingError, StackError, BadClipError):
        assert issubclass(error, AsvaError), error


@pytest.mark.parametrize(
    "old, new",
    [
        ("eval.audio_guidance_scale", "generate.audio_guidance_scale"),
        ("eval.seed", "generate.seed"),
        ("eval.sampler", "generate.sampler"),
    ],
)
def test_a_moved_key_is_a_one_line_error_naming_the_new_one(tmp_path, old, new):
    """The generation settings left ``eval:`` for ``generate:``; a file, an override or a sweep that still names
    the old key says where it went, whichever way it arrives."""
    from sweeps.spec import load_sweep

    section, key = old.split(".")
    value = "authors" if key == "sampler" else 4
    file = tmp_path / "old.yaml"
    file.write_text(yaml.safe_dump({section: {key: value}}))
    sweep = tmp_path / "sweep.yaml"
    (tmp_path / "base.yaml").write_text("name: base\n")
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "old-keys",
                "kind": "guidance",
                "checkpoint": "init",
                "base_config": "base.yaml",
                "search_space": {old: {"grid": [value]}},
            }
        )
    )
    for load in (
        lambda: load_experiment(str(file)),
        lambda: load_experiment(None, [f"{old}={value}"]),
        lambda: load_sweep(sweep),
    ):
        with pytest.raises(cfg.ConfigError) as err:
            load()
        message = str(err.value)
        assert f"{old}: moved to {new}" in message and "\n" not in message
    assert getattr(load_experiment(None, [f"{new}={value}"]).generate, key) == value  # the new key works
