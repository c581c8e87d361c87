"""Checkpoint references without MLflow or DeepSpeed: init, exported UNet folders, run directories, errors.
(Training checkpoints, S3 and MLflow run ids: tests/integration/test_evaluate_checkpoints.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from asva_model.build import build_audio_encoder, build_unet
from asva_model.pretrained import make_tiny_pretrained, write_authors_layout
from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.errors import UserError
from asva_platform.experiment import ExperimentConfig
from asva_platform.inference.animator import Animator
from asva_platform.inference.checkpoints import (
    checkpoint_fingerprint,
    is_run_ref,
    load_trained_unet,
    resolve_checkpoint,
    saved_audio_encoder,
)
from asva_platform.storage import Storage


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> ExperimentConfig:
    model = make_tiny_pretrained(tmp_path_factory.mktemp("tiny"), tiny_model_config())
    return dataclasses.replace(ExperimentConfig(), model=model)


def _perturbed_unet(exp) -> torch.nn.Module:
    unet = build_unet(exp.model)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "_temp" in name or "_audio" in name:
                p.add_(0.01 * torch.randn_like(p))
    return unet


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_is_the_pretrained_initialisation(exp):
    resolved = resolve_checkpoint("init", Storage())
    assert resolved.kind == "init" and resolved.label == "init"
    unet = load_trained_unet(exp.model, resolved, Storage())
    torch.manual_seed(0)  # the new (temporal/audio) modules' init is seeded, so every worker gets the same
    assert _same_weights(unet, build_unet(exp.model)) and not any(p.requires_grad for p in unet.parameters())
    assert not unet.training


def test_exported_folder_loads_its_weights(exp, tmp_path):
    trained = _perturbed_unet(exp)
    trained.save_pretrained(tmp_path / "step_00000040" / "export")
    ref = str(tmp_path / "step_00000040" / "export")
    resolved = resolve_checkpoint(ref, Storage())
    assert (resolved.kind, resolved.step, resolved.label) == ("export", 40, "step-40")
    loaded = load_trained_unet(exp.model, resolved, Storage())
    assert _same_weights(loaded, trained) and not _same_weights(loaded, build_unet(exp.model))


def test_exported_folder_of_another_geometry_is_refused(exp, tmp_path):
    other = dataclasses.replace(
        exp.model, pretrained_sd="", unet=dataclasses.replace(exp.model.unet, block_out_channels=[16, 32])
    )
    build_unet(other).save_pretrained(tmp_path / "export")
    with pytest.raises(ValueError, match="do not fit model.unet"):
        load_trained_unet(exp.model, resolve_checkpoint(str(tmp_path / "export"), Storage()), Storage())


def test_a_run_directory_means_its_latest_training_checkpoint(tmp_path):
    for step in (10, 200, 30):
        d = tmp_path / f"step_{step:08d}"
        d.mkdir()
        (d / "trainer_state.json").write_text(json.dumps({"step": step}))
    resolved = resolve_checkpoint(str(tmp_path), Storage())
    assert resolved.kind == "training" and resolved.step == 200 and resolved.uri.endswith("step_00000200")


def test_fingerprint_changes_when_the_folder_is_rewritten(exp, tmp_path):
    folder = tmp_path / "export"
    build_unet(exp.model).save_pretrained(folder)
    before = checkpoint_fingerprint(resolve_checkpoint(str(folder), Storage()), Storage())
    assert before == checkpoint_fingerprint(resolve_checkpoint(str(folder), Storage()), Storage())
    _perturbed_unet(exp).save_pretrained(folder)
    assert checkpoint_fingerprint(resolve_checkpoint(str(folder), Storage()), Storage()) != before


def test_bad_references_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"), Storage())
    with pytest.raises(UserError, match="neither an exported UNet"):
        resolve_checkpoint(str(tmp_path / "empty"), Storage())
    with pytest.raises(UserError, match="no tracking URI"):
        resolve_checkpoint("0123456789abcdef0123456789abcdef", Storage())
    assert is_run_ref("runs:/0123456789abcdef0123456789abcdef") and not is_run_ref("s3://b/0123")


@pytest.mark.parametrize("source", ["checkpoint", "imagebind"])
def test_the_audio_encoder_comes_from_where_generate_audio_encoder_source_says(exp, tmp_path, source):
    """The authors' release saves an fp16-cast encoder beside the UNet (``modules/{unet,audio_encoder}``); their
    evaluation builds a fresh one from ImageBind's file instead (``imagebind``)."""
    imagebind = build_audio_encoder(exp.model)  # from model.audio_encoder_weights (ImageBind's .pth)
    saved = build_audio_encoder(exp.model).half()
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(0.01)  # so the saved copy differs from ImageBind's by more than fp16 rounding
    modules = write_authors_layout(_perturbed_unet(exp), saved, tmp_path)
    resolved = resolve_checkpoint(str(modules / "unet"), Storage())
    assert saved_audio_encoder(resolved, Storage()) == str(modules / "audio_encoder")
    generate = dataclasses.replace(exp.generate, audio_encoder_source=source)
    animator = Animator.load(
        exp.model, exp.sampling, generate, resolved, Storage(), scratch=tmp_path / "scratch"
    )
    encoder = animator.pipe.audio_encoder
    expected = saved.float() if source == "checkpoint" else imagebind
    assert _same_weights(encoder, expected) and encoder.dtype == torch.float32


def test_our_checkpoints_carry_no_audio_encoder_of_their_own(exp, tmp_path):
    _perturbed_unet(exp).save_pretrained(tmp_path / "export")
    assert saved_audio_encoder(resolve_checkpoint(str(tmp_path / "export"), Storage()), Storage()) == ""
    assert saved_audio_encoder(resolve_checkpoint("init", Storage()), Storage()) == ""
