"""Audio encoder: token layout, per-frame segment masks, ImageBind/authors' checkpoint loading, null audio,
drop-path behaviour, parameter count."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from asva_model.build import AUDIO_ENCODER_RUNTIME_FIELDS, audio_encoder_kwargs, build_audio_encoder
from asva_model.config import AudioEncoderConfig, ModelConfig
from asva_model.metrics.networks.imagebind import ImageBindConfig, ImageBindEncoders
from asva_model.models.audio_encoder import ImageBindAudioEncoder, segment_mask
from asva_model.pretrained import imagebind_state_dict, make_tiny_pretrained, write_authors_layout
from asva_platform.dev.fixtures import tiny_model_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_pretrained(tmp_path_factory.mktemp("tiny"), tiny_model_config())


def _tiny_encoder(**kw) -> ImageBindAudioEncoder:
    return ImageBindAudioEncoder(embed_dim=32, num_blocks=2, num_heads=2, head_out_dim=32, **kw)


def test_paper_mask_12_frames_25_of_229_tokens():
    mask = segment_mask(12, 12, 19)
    assert mask.shape == (12, 229) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [25] * 12
    assert mask[:, 0].all()  # CLS is visible to every frame
    grid = mask[:, 1:].reshape(12, 12, 19)  # frame, frequency row, time column
    assert (grid == grid[:, :1]).all()  # every frequency row of the window
    starts = [int(cols.nonzero()[0]) for cols in grid[:, 0]]
    assert starts == [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17]
    assert all(int(cols.sum()) == 2 and cols[s : s + 2].all() for cols, s in zip(grid[:, 0], starts))
    # token index = 1 + freq * 19 + time (ImageBind flattens the conv output frequency-major)
    assert mask[3, 1 + 5 * 19 + 5] and mask[3, 1 + 5 * 19 + 6] and not mask[3, 1 + 5 * 19 + 7]


@pytest.mark.parametrize("frames", [1, 4, 8, 16, 19, 24])
def test_mask_is_general(frames):
    mask = segment_mask(frames, 3, 19)
    width = -(-19 // frames)
    assert mask.shape == (frames, 1 + 3 * 19)
    assert mask.sum(1).tolist() == [1 + 3 * width] * frames
    cols = mask[:, 1:].reshape(frames, 3, 19)[:, 0]
    starts = [int(c.nonzero()[0]) for c in cols]
    assert starts[0] == 0 and starts[-1] == 19 - width and starts == sorted(starts)
    assert torch.equal(segment_mask(frames, 3, 19, with_cls=False), mask[:, 1:])


def test_encoder_tokens_and_masks(tiny):
    enc = build_audio_encoder(tiny)
    assert enc.patch_grid == (12, 19) and enc.num_tokens == 229
    mel = torch.randn(2, 1, 128, 204)
    tokens = enc.encode(mel)
    assert tokens.shape == (2, 229, 32) and tokens.dtype == torch.float32
    assert torch.equal(enc.segment_mask(12), segment_mask(12, 12, 19))
    null = enc.null_audio_tokens()
    assert torch.equal(null, enc.encode(torch.zeros(1, 1, 128, 204)))
    assert not torch.allclose(null, tokens[:1])
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    with pytest.raises(ValueError, match="mel must be"):
        enc.encode(torch.randn(2, 1, 64, 204))


def test_loads_imagebind_checkpoint_keys(tiny):
    state = torch.load(tiny.audio_encoder_weights, weights_only=True)
    assert "modality_trunks.audio.blocks.0.attn.in_proj_weight" in state
    assert "modality_trunks.audio.blocks.0.attn.bias_k" in state
    assert "modality_preprocessors.audio.rgbt_stem.proj.weight" in state
    assert "modality_heads.audio.2.weight" in state
    enc = build_audio_encoder(tiny)
    ours = enc.state_dict()
    assert torch.equal(
        ours["trunk.blocks.1.mlp.fc2.weight"], state["modality_trunks.audio.blocks.1.mlp.fc2.weight"]
    )
    # the extra LayerNorm is not in ImageBind's file: identity init
    assert torch.equal(ours["final_layer_norm.weight"], torch.ones(32))
    assert torch.equal(ours["final_layer_norm.bias"], torch.zeros(32))


def test_rejects_a_checkpoint_of_another_geometry(tmp_path, tiny):
    bigger = ImageBindAudioEncoder(embed_dim=64, num_blocks=2, num_heads=2, head_out_dim=32)
    torch.save(imagebind_state_dict(bigger), tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"weights do not fit ImageBindAudioEncoder \(.*shape mismatch"):
        build_audio_encoder(dataclasses.replace(tiny, audio_encoder_weights=str(tmp_path / "other.pth")))
    torch.save({"modality_trunks.vision.x": torch.zeros(1)}, tmp_path / "vision_only.pth")
    with pytest.raises(ValueError, match="no ImageBind audio weights"):
        build_audio_encoder(
            dataclasses.replace(tiny, audio_encoder_weights=str(tmp_path / "vision_only.pth"))
        )
    with pytest.raises(FileNotFoundError):
        build_audio_encoder(dataclasses.replace(tiny, audio_encoder_weights=str(tmp_path / "missing.pth")))


def test_loads_saved_and_authors_folders(tiny, tmp_path):
    enc = build_audio_encoder(tiny)
    with torch.no_grad():
        enc.final_layer_norm.weight.mul_(1.5)
    from asva_model.build import build_unet

    modules = write_authors_layout(build_unet(tiny), enc, tmp_path)
    again = build_audio_encoder(
        dataclasses.replace(tiny, audio_encoder_weights=str(modules / "audio_encoder"))
    )
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values()))


def test_drop_path_only_in_train_mode():
    torch.manual_seed(0)
    enc = _tiny_encoder(drop_path=0.5)
    assert [round(b.drop_path.p, 3) for b in enc.trunk.blocks] == [0.0, 0.5]
    mel = torch.randn(4, 1, 128, 204)
    enc.eval()
    assert torch.equal(enc.encode(mel), enc.encode(mel))
    enc.train()
    outs = [enc.encode(mel) for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def _seq_first_trunk(trunk, x: torch.Tensor) -> torch.Tensor:
    """The audio trunk as ImageBind runs it: tokens sequence-first, (tokens, batch, dim), with a stochastic-
    depth draw per entry of the first axis (timm's DropPath) -- written out with the trunk's own layers."""

    def drop(y: torch.Tensor, p: float) -> torch.Tensor:
        if p == 0.0:
            return y
        seq_first = y.transpose(0, 1)
        keep = seq_first.new_empty((seq_first.shape[0], 1, 1)).bernoulli_(1 - p).div_(1 - p)
        return (seq_first * keep).transpose(0, 1)

    x = trunk.pre_transformer_layer(x)
    for block in trunk.blocks:
        h = block.norm_1(x)
        x = x + drop(block.attn(h, h, h, need_weights=False)[0], block.drop_path.p)
        x = x + drop(block.mlp(block.norm_2(x)), block.drop_path.p)
    return x


def test_authors_drop_path_layout_draws_per_token_position_shared_by_the_batch():
    torch.manual_seed(0)
    enc = _tiny_encoder(drop_path=0.5, drop_path_layout="authors").train()
    tokens = enc.preprocessor(torch.randn(1, 1, 128, 204)).expand(3, -1, -1)  # three identical clips
    torch.manual_seed(1)
    ours = enc.trunk(tokens)
    torch.manual_seed(1)
    torch.testing.assert_close(ours, _seq_first_trunk(enc.trunk, tokens), rtol=0, atol=1e-6)
    assert torch.equal(ours[0], ours[1]) and torch.equal(ours[1], ours[2])  # one draw for the whole batch
    per_sample = _tiny_encoder(drop_path=0.5).train()
    per_sample.load_state_dict(enc.state_dict())
    torch.manual_seed(1)
    theirs = per_sample.trunk(tokens)
    assert not (torch.equal(theirs[0], theirs[1]) and torch.equal(theirs[1], theirs[2]))
    with pytest.raises(ValueError, match="drop_path_layout"):
        _tiny_encoder(drop_path_layout="per_token")


def test_full_size_is_imagebind_huge_audio():
    with torch.device("meta"):
        enc = build_audio_encoder(ModelConfig(), device="meta")
    assert enc.num_tokens == 229 and enc.token_dim == 768
    assert sum(p.numel() for p in enc.parameters()) / 1e6 == pytest.approx(86.2, abs=0.1)
    assert [round(b.drop_path.p, 4) for b in enc.trunk.blocks][-1] == 0.1


def test_the_encoder_and_the_metric_network_run_one_imagebind_audio_branch(tmp_path):
    """One implementation: the same trunk/stem/head classes, and from one checkpoint the same numbers."""
    torch.manual_seed(0)
    ib = ImageBindEncoders(
        ImageBindConfig(
            vision_dim=32,
            vision_blocks=1,
            vision_heads=2,
            vision_patch=32,
            text_dim=32,
            text_blocks=1,
            text_heads=2,
            vocab_size=16,
            audio_dim=32,
            audio_blocks=2,
            audio_heads=2,
            out_dim=32,
        )
    ).eval()
    state = dict(
        ib.state_dict(), **{"modality_postprocessors.audio.1.log_logit_scale": torch.tensor(math.log(20.0))}
    )
    torch.save(state, tmp_path / "imagebind.pth")
    enc = _tiny_encoder()
    enc.load_weights(tmp_path / "imagebind.pth")
    enc.eval()
    for ours, theirs in (
        (enc.preprocessor, ib.modality_preprocessors["audio"]),
        (enc.trunk, ib.modality_trunks["audio"]),
        (enc.head, ib.modality_heads["audio"]),
    ):
        assert type(ours) is type(theirs)
    mel = torch.randn(2, 1, 128, 204)
    with torch.no_grad():
        tokens = enc.trunk(enc.preprocessor(mel))
        assert torch.equal(tokens, ib.modality_trunks["audio"](ib.modality_preprocessors["audio"](mel)))
        assert torch.equal(enc.head(tokens), ib.modality_heads["audio"](tokens))


def test_the_constructor_takes_the_config_section_minus_its_runtime_keys():
    params = [p for p in inspect.signature(ImageBindAudioEncoder.__init__).parameters if p != "self"]
    fields = [f.name for f in dataclasses.fields(AudioEncoderConfig)]
    assert params == [f for f in fields if f not in AUDIO_ENCODER_RUNTIME_FIELDS]
    assert audio_encoder_kwargs(AudioEncoderConfig()) == {
        p: v.default
        for p, v in inspect.signature(ImageBindAudioEncoder.__init__).parameters.items()
        if p != "self"
    }
