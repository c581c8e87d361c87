"""AudioUNet3D: inflation from SD weights, zero-init equivalence to the 2D model, FF conv maths,
trainable split, save/load round trips (ours and the authors' layout), full-size parameter counts."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from asva_model.build import build_unet, load_unet
from asva_model.config import ModelConfig, UNetConfig
from asva_model.info import model_info
from asva_model.models.audio_encoder import ImageBindAudioEncoder
from asva_model.models.resnet import FFInflatedConv
from asva_model.models.unet import AudioUNet3D, apply_trainable, config_from_2d, trainable_parameter_names
from asva_model.pretrained import make_tiny_pretrained, write_authors_layout
from asva_platform.dev.fixtures import tiny_model_config

B, F_, S = 2, 3, 229


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_pretrained(tmp_path_factory.mktemp("tiny"), tiny_model_config())


def _inputs(seed=0, frames=F_, size=8, dim=32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, 4, frames, size, size, generator=g),
        torch.tensor([7, 901]),
        torch.randn(B, 77, dim, generator=g),
        torch.randn(B, S, dim, generator=g),
    )


def _randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter (including the zero-initialised ones) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


# ------------------------------------------------------------------------------------------------
# 2D reference: diffusers' own UNet2DConditionModel, with the two structural changes AVSyncD makes to
# the image model (keys/values of self-attention from frame 0; resnet GroupNorm statistics pooled over
# the frames of a clip), written independently of asva_model.


class _FirstFrameKV:
    def __init__(self, frames):
        self.frames = frames

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        bf, n, _ = hidden_states.shape
        ref = hidden_states.reshape(bf // self.frames, self.frames, n, -1)[:, :1].expand(
            -1, self.frames, -1, -1
        )
        ref = ref.reshape(bf, n, -1)
        q, k, v = attn.to_q(hidden_states), attn.to_k(ref), attn.to_v(ref)
        h = attn.heads
        q, k, v = (t.reshape(bf, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        out = (w @ v).transpose(1, 2).reshape(bf, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


class _ClipGroupNorm(torch.nn.Module):
    def __init__(self, norm, frames):
        super().__init__()
        self.norm, self.frames = norm, frames

    def forward(self, x):
        bf, c, h, w = x.shape
        v = x.reshape(bf // self.frames, self.frames, c, h, w).permute(0, 2, 1, 3, 4)
        y = F.group_norm(v, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps)
        return y.permute(0, 2, 1, 3, 4).reshape(bf, c, h, w)


def _reference_2d(unet_dir, frames):
    ref = UNet2DConditionModel.from_pretrained(unet_dir, low_cpu_mem_usage=False)
    for name, module in list(ref.named_modules()):
        if name.endswith("attn1"):
            module.set_processor(_FirstFrameKV(frames))
        for child in ("norm1", "norm2"):
            if type(module).__name__ == "ResnetBlock2D":
                setattr(module, child, _ClipGroupNorm(getattr(module, child), frames))
    ref.conv_norm_out = _ClipGroupNorm(ref.conv_norm_out, frames)
    return ref.eval()


def test_inflated_unet_starts_as_the_image_model(tiny):
    unet_dir = f"{tiny.pretrained_sd}/unet"
    model = AudioUNet3D.from_pretrained_2d(unet_dir, audio_cross_attention_dim=32).eval()
    # The paper's zero inits: every FF temporal conv entirely, temporal attention's output weight.
    for name, p in model.named_parameters():
        if "conv_temp" in name or name.endswith("attn_temp.to_out.0.weight"):
            assert torch.count_nonzero(p) == 0, name
    # The original leaves attn_temp's output bias and the (non-zero-init) audio cross-attention at their
    # default init; force those outputs to zero as the issue specifies for this equivalence.
    with torch.no_grad():
        for block in (m for n, m in model.named_modules() if n.endswith("transformer_blocks.0")):
            block.attn_temp.to_out[0].bias.zero_()
            block.attn_audio.to_out[0].weight.zero_()
            block.attn_audio.to_out[0].bias.zero_()
    sample, t, text, audio = _inputs()
    mask = torch.rand(B, F_, S) > 0.5
    with torch.no_grad():
        out3d = model(sample, t, text, audio, mask)
        ref = _reference_2d(unet_dir, F_)
        flat = sample.transpose(1, 2).reshape(B * F_, 4, 8, 8)
        out2d = ref(flat, t.repeat_interleave(F_), text.repeat_interleave(F_, 0)).sample
    out2d = out2d.reshape(B, F_, 4, 8, 8).transpose(1, 2)
    assert out3d.shape == sample.shape
    torch.testing.assert_close(out3d, out2d, atol=2e-5, rtol=1e-4)
    # and frame k really differs from a plain per-frame 2D pass (frame-0 K/V matters)
    with torch.no_grad():
        plain = UNet2DConditionModel.from_pretrained(unet_dir, low_cpu_mem_usage=False).eval()
        per_frame = plain(flat, t.repeat_interleave(F_), text.repeat_interleave(F_, 0)).sample
    assert not torch.allclose(out2d, per_frame.reshape(B, F_, 4, 8, 8).transpose(1, 2), atol=1e-3)


def test_new_modules_change_the_output_once_trained(tiny):
    model = AudioUNet3D.from_pretrained_2d(f"{tiny.pretrained_sd}/unet", 32).eval()
    sample, t, text, audio = _inputs()
    with torch.no_grad():
        before = model(sample, t, text, audio)
        other_audio = model(sample, t, text, torch.randn_like(audio))
        for p in (p for n, p in model.named_parameters() if "conv_temp" in n):
            p.normal_(0, 0.01)
        after = model(sample, t, text, audio)
    assert not torch.allclose(before, other_audio)  # audio cross-attention is live from the start
    assert not torch.allclose(before, after)


def test_ff_conv_equals_linear_over_first_prev_current():
    torch.manual_seed(0)
    conv = FFInflatedConv(6, 8, 3, padding=1)
    torch.nn.init.normal_(conv.conv_temp.weight)
    torch.nn.init.normal_(conv.conv_temp.bias)
    b, f = 2, 5
    x = torch.randn(b * f, 6, 7, 7)
    y = (
        F.conv2d(x, conv.weight, conv.bias, padding=1).reshape(b, f, 8, 7, 7).permute(0, 3, 4, 1, 2)
    )  # b h w f c
    prev = torch.clamp(torch.arange(f) - 1, min=0)
    cat = torch.cat([y[..., [0] * f, :], y[..., prev, :], y], dim=-1)
    expected = (y + conv.conv_temp(cat)).permute(0, 3, 4, 1, 2).reshape(b * f, 8, 7, 7)
    torch.testing.assert_close(conv(x, f), expected, atol=1e-4, rtol=1e-4)


def test_inflation_reads_bin_weights_and_rejects_mismatch(tmp_path):
    cfg = make_tiny_pretrained(tmp_path / "bin", tiny_model_config(), weights_format="bin")
    unet_dir = tmp_path / "bin" / "sd" / "unet"
    assert (unet_dir / "diffusion_pytorch_model.bin").is_file()
    model = AudioUNet3D.from_pretrained_2d(unet_dir, 32)
    ref = UNet2DConditionModel.from_pretrained(unet_dir, low_cpu_mem_usage=False)
    assert torch.equal(
        model.state_dict()["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"],
        ref.state_dict()["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"],
    )
    assert cfg.pretrained_sd.endswith("sd")
    config = json.loads((unet_dir / "config.json").read_text())
    config["use_linear_projection"] = True
    (unet_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_linear_projection"):
        AudioUNet3D.from_pretrained_2d(unet_dir, 32)


def test_trainable_split_by_name(tiny):
    model = build_unet(tiny)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(trainable_parameter_names(model, ["_temp", "_audio"]))
    for kind in ("conv_temp", "attn_temp", "norm_temp", "pos_embedding_temp", "attn_audio", "norm_audio"):
        assert any(f".{kind}." in n for n in trainable), kind
    assert all(("_temp" in n or "_audio" in n) for n in trainable)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert (
        "conv_in.weight" in frozen
        and "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight" in frozen
    )
    assert not any("_temp" in n or "_audio" in n for n in frozen)
    with pytest.raises(ValueError, match="match no parameter"):
        apply_trainable(model, ["_nothing_"])


def test_save_load_round_trip_is_bit_exact(tiny, tmp_path):
    model = build_unet(tiny).eval()
    _randomize(model)
    model.save_pretrained(tmp_path / "unet")
    loaded = AudioUNet3D.from_pretrained(tmp_path / "unet").eval()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    sample, t, text, audio = _inputs()
    with torch.no_grad():
        assert torch.equal(model(sample, t, text, audio), loaded(sample, t, text, audio))
    # The same folder through `model.init_unet`'s loader (its config has derived, null block types).
    again = load_unet(tmp_path / "unet").eval()
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_loads_the_authors_released_layout(tiny, tmp_path):
    model = build_unet(tiny).eval()
    _randomize(model)
    encoder = ImageBindAudioEncoder(embed_dim=32, num_blocks=2, num_heads=2, head_out_dim=32)
    modules = write_authors_layout(model, encoder, tmp_path)
    assert (
        json.loads((modules / "unet" / "config.json").read_text())["_class_name"]
        == "AudioUNet3DConditionModel"
    )
    loaded = load_unet(modules / "unet").eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    # and through the config path, as a training/eval job would: init_unet wins over pretrained_sd
    built = build_unet(dataclasses.replace(tiny, init_unet=str(modules / "unet")))
    assert torch.equal(
        built.state_dict()["conv_in.conv_temp.weight"], model.state_dict()["conv_in.conv_temp.weight"]
    )


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    torch.manual_seed(0)
    model = build_unet(tiny).train()
    _randomize(model)
    sample, t, text, audio = _inputs()

    def grads():
        model.zero_grad()
        model(sample, t, text, audio).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.enable_gradient_checkpointing()
    with_ckpt = grads()
    model.disable_gradient_checkpointing()
    without = grads()
    assert with_ckpt.keys() == without.keys() and len(with_ckpt) > 0
    for n in with_ckpt:
        torch.testing.assert_close(with_ckpt[n], without[n], atol=1e-6, rtol=1e-4)


def test_odd_latent_sizes_and_timestep_forms(tiny):
    model = build_unet(tiny).eval()
    sample, _, text, audio = _inputs(size=6)
    with torch.no_grad():
        a = model(sample, 500, text, audio)
        b = model(sample, torch.tensor(500), text, audio)
        c = model(sample, torch.tensor([500, 500]), text, audio)
    assert a.shape == sample.shape
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="audio_attention_mask"):
        model(sample, 500, text, audio, torch.ones(B, F_ + 1, S, dtype=torch.bool))


def test_full_size_parameter_counts_match_the_paper():
    info = model_info(ModelConfig())
    g = info["groups"]
    m = {k: v / 1e6 for k, v in g.items()}
    # supp. Table 2: FF temporal conv 191M, temporal attention 75M, audio cross-attention 44M (trainable,
    # ~310M in all), SD UNet2D 870M as reported (SD-1.5's UNet has 859.5M), ImageBind audio 86M.
    assert m["ff_temporal_conv"] == pytest.approx(191, rel=0.01)
    assert m["temporal_attn"] == pytest.approx(75, rel=0.015)
    assert m["audio_cross_attn"] == pytest.approx(44, rel=0.01)
    assert info["trainable"] / 1e6 == pytest.approx(310, rel=0.01)
    assert info["trainable"] == g["ff_temporal_conv"] + g["temporal_attn"] + g["audio_cross_attn"]
    assert 855 <= m["unet2d"] <= 875
    assert m["audio_encoder"] == pytest.approx(86, rel=0.01)
    assert info["frozen"] == info["total"] - info["trainable"]


def test_compiles_without_graph_breaks(tiny):
    model = build_unet(tiny).eval()
    sample, t, text, audio = _inputs()
    mask = torch.ones(1, F_, S, dtype=torch.bool)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(sample, t, text, audio, mask), model(sample, t, text, audio, mask)
        )


def test_full_size_state_dict_is_sd15_plus_new_modules():
    """On meta: every SD-1.5 UNet weight has a same-shaped twin, and the only extra weights are new modules."""
    with torch.device("meta"):
        sd = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
        ours = AudioUNet3D()
    sd_state, our_state = sd.state_dict(), ours.state_dict()
    assert all(k in our_state and our_state[k].shape == v.shape for k, v in sd_state.items())
    extra = set(our_state) - set(sd_state)
    assert extra and all("_temp" in k or "_audio" in k for k in extra)


def test_the_constructor_takes_the_config_section():
    params = inspect.signature(AudioUNet3D.__init__).parameters
    assert [p for p in params if p != "self"] == [f.name for f in dataclasses.fields(UNetConfig)]
    defaults = dataclasses.asdict(UNetConfig())
    assert {
        p: list(v.default) if isinstance(v.default, tuple) else v.default
        for p, v in params.items()
        if p != "self"
    } == defaults
    with torch.device("meta"):
        model = AudioUNet3D(**dataclasses.asdict(tiny_model_config().unet))
    assert {k: model.config[k] for k in defaults} == dataclasses.asdict(tiny_model_config().unet)


def test_our_export_loads_with_from_pretrained_and_refuses_weights_that_do_not_fit(tiny, tmp_path):
    model = build_unet(tiny).eval()
    model.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["_class_name"] == "AudioUNet3D"
    assert set(config) - {"_class_name", "_diffusers_version"} == {
        f.name for f in dataclasses.fields(UNetConfig)
    }
    config["block_out_channels"] = [16, 64]  # same keys, other shapes
    (tmp_path / "ours" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weights do not fit AudioUNet3D \(.*shape mismatch \['conv_in"):
        load_unet(tmp_path / "ours")


def test_only_sd15_block_layouts_convert():
    sd = {
        "block_out_channels": [32, 64],
        "attention_head_dim": [2, 2],
        "cross_attention_dim": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "norm_num_groups": 8,
        "sample_size": 64,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    assert config_from_2d(sd, audio_cross_attention_dim=16) == dict(
        dataclasses.asdict(UNetConfig()),
        block_out_channels=[32, 64],
        attention_head_dim=2,
        cross_attention_dim=32,
        audio_cross_attention_dim=16,
        norm_num_groups=8,
    )
    with pytest.raises(ValueError, match="down_block_types"):
        config_from_2d(dict(sd, down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]))
    with pytest.raises(ValueError, match="freq_shift=1 is not supported"):
        config_from_2d(dict(sd, freq_shift=1))
