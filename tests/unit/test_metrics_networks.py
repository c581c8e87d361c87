"""Metric networks: real architectures and layouts (checked at full size on the meta device), and tiny
random-init networks saved and loaded through the real on-disk formats."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.networks import Embedder, MetricNetworks, SyncScorer, load_metric_networks
from asva_model.metrics.networks.avsync_classifier import (
    AudioConv2DNet,
    AVSyncClassifier,
    FCHead,
    VideoR2Plus1DNet,
    load_avsync_classifier,
)
from asva_model.metrics.networks.bpe import BPETokenizer, read_merges, save_merges
from asva_model.metrics.networks.i3d import TinyVideoDetector, load_video_detector, save_tiny_video_detector
from asva_model.metrics.networks.imagebind import ImageBindConfig, ImageBindEncoders, load_imagebind
from asva_model.metrics.networks.inception import FIDInceptionV3, load_fid_inception
from asva_model.metrics.networks.tiny import (
    TINY_MERGES,
    relu_preserving_init,
    save_tiny_metric_networks,
    tiny_imagebind_config,
)


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> MetricsConfig:
    return save_tiny_metric_networks(tmp_path_factory.mktemp("tiny_metric_nets"))


# ---------------------------------------------------------------------------------------------
# FID-Inception


def test_full_fid_inception_matches_the_pytorch_fid_layout():
    with torch.device("meta"):
        net = FIDInceptionV3()
        feats = net(torch.empty(2, 3, 229, 229))
    assert feats.shape == (2, 2048)
    # torchvision Inception-v3: 27,161,264 params; minus the aux classifier (3,326,696) and with a
    # 1008-way fc (+16,392) -> the FID network's 23,850,960.
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    keys = net.state_dict()
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.bn.running_var": (384,),
        "fc.weight": (1008, 2048),
    }.items():
        assert tuple(keys[key].shape) == shape


def test_tiny_inception_round_trips_without_num_batches_tracked(tiny_cfg):
    state = torch.load(tiny_cfg.inception_weights, weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    net = load_fid_inception(tiny_cfg.inception_weights)
    assert net.width_divisor == 16 and net.feature_dim == 128 and not net.training
    reference = FIDInceptionV3(width_divisor=16).eval()
    reference.load_state_dict(state)
    x = torch.rand(2, 3, 80, 80) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_fid_tf_pool_quirks_change_the_features():
    # Mixed_7c max-pools and the TF average pools ignore padding: swapping either changes the output.
    torch.manual_seed(0)
    net = relu_preserving_init(FIDInceptionV3(width_divisor=16)).eval()
    x = torch.rand(1, 3, 160, 160) * 2 - 1  # big enough that Mixed_7c still sees a 3x3 map
    with torch.no_grad():
        base = net(x)
        net.Mixed_7c.max_pool = False
        assert (base - net(x)).abs().max() > 1e-3 * base.abs().max()


def test_inception_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_fid_inception(tmp_path / "missing.pth")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a FID-Inception state dict"):
        load_fid_inception(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_fid_inception(tmp_path / "junk.pth")


# ---------------------------------------------------------------------------------------------
# I3D (TorchScript)


def test_torchscript_detector_round_trip(tmp_path):
    path = save_tiny_video_detector(tmp_path / "i3d.pt", feature_dim=8, seed=3)
    torch.manual_seed(3)
    reference = TinyVideoDetector(8).eval()
    detector = load_video_detector(path)
    video = torch.rand(2, 3, 12, 32, 32) * 2 - 1
    with torch.no_grad():
        out = detector(video)
        assert out.shape == (2, 8)
        assert torch.allclose(out, reference(video, rescale=False, resize=False, return_features=True))


class _FlatDetector(torch.nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return x.flatten()


def test_detector_contract_and_file_errors(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_FlatDetector()), str(tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match=r"\(batch, dim\) features"):
        load_video_detector(tmp_path / "flat.pt")(torch.zeros(2, 3, 4, 8, 8))
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not a TorchScript module"):
        load_video_detector(tmp_path / "state.pt")


# ---------------------------------------------------------------------------------------------
# ImageBind + BPE


def test_full_imagebind_layout_and_size_inference():
    with torch.device("meta"):
        model = ImageBindEncoders()
    state = model.state_dict()
    for key, shape in {
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (1280, 3, 2, 14, 14),
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, 257, 1280),
        "modality_preprocessors.text.token_embedding.weight": (49408, 1024),
        "modality_preprocessors.text.mask": (77, 77),
        "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": (768,),
        "modality_preprocessors.audio.pos_embedding_helper.pos_embed": (1, 229, 768),
        "modality_trunks.vision.pre_transformer_layer.0.weight": (1280,),
        "modality_trunks.vision.blocks.31.mlp.fc1.weight": (5120, 1280),
        "modality_trunks.audio.blocks.11.attn.bias_k": (1, 1, 768),
        "modality_heads.vision.2.weight": (1024, 1280),
        "modality_heads.text.proj.1.weight": (1024, 1024),
        "modality_heads.audio.2.weight": (1024, 768),
    }.items():
        assert tuple(state[key].shape) == shape, key
    params = {
        m: sum(v.numel() for k, v in model.named_parameters() if k.split(".")[1] == m) / 1e6
        for m in ("vision", "text", "audio")
    }
    assert params["audio"] == pytest.approx(86.2, abs=0.1)  # the supplement's "86M" audio encoder
    assert params["vision"] == pytest.approx(632.8, abs=0.1) and params["text"] == pytest.approx(
        354.0, abs=0.1
    )
    assert ImageBindConfig.from_state_dict(state, (16, 16, 12)) == ImageBindConfig()


def test_bpe_tokenizer_hand_values(tmp_path):
    path = save_merges(tmp_path / "bpe.txt.gz", TINY_MERGES)
    assert read_merges(path) == TINY_MERGES
    tok = BPETokenizer.from_file(path, context_length=8)
    # GPT-2/CLIP byte symbols: "!" is id 0, "a" 64, a space byte (chr(288)) 220; merges from 512, then SOT/EOT.
    assert (tok.encoder["!"], tok.encoder["a"], tok.encoder[chr(288)]) == (0, 64, 220)
    assert tok.vocab_size == 512 + len(TINY_MERGES) + 2
    sot, eot = tok.vocab_size - 2, tok.vocab_size - 1
    # "dog" -> d o g</w> -> do g</w> -> dog</w> (513); "barking" -> bark (518) + ing</w> (517)
    assert tok(["Dog   Barking"]).tolist() == [[sot, 513, 518, 517, eot, 0, 0, 0]]
    long = tok(["dog " * 20])[0].tolist()
    assert len(long) == 8 and long[0] == sot and long[-1] == eot  # truncated, still ends with EOT


def test_bpe_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_merges(tmp_path / "none.gz")
    (tmp_path / "plain.txt").write_text("#v\na b\n")
    with pytest.raises(ValueError, match="not a gzipped"):
        read_merges(tmp_path / "plain.txt")
    save_merges(tmp_path / "bad.gz", [("a", "b")])
    import gzip

    with gzip.open(tmp_path / "bad.gz", "wt") as fh:
        fh.write("#v\na b c\n")
    with pytest.raises(ValueError, match="two symbols"):
        read_merges(tmp_path / "bad.gz")


def test_tiny_imagebind_round_trip_and_unit_norm(tiny_cfg):
    nets = load_metric_networks(dataclasses.replace(tiny_cfg, metrics=["ia", "it"]))
    emb = nets.imagebind
    assert isinstance(emb, Embedder) and emb.image_size == 224
    reference = ImageBindEncoders(tiny_imagebind_config()).eval()
    reference.load_state_dict(torch.load(tiny_cfg.imagebind_weights, weights_only=True))
    images, mel = torch.randn(3, 3, 224, 224), torch.randn(2, 1, 128, 204)
    with torch.no_grad():
        img, aud, txt = emb.embed_image(images), emb.embed_audio(mel), emb.embed_text(["dog barking", "ba"])
        assert torch.allclose(img, reference.encode_image(images))
        assert torch.allclose(aud, reference.encode_audio(mel))
    for e, n in ((img, 3), (aud, 2), (txt, 2)):
        assert e.shape == (n, 16)
        assert torch.allclose(e.norm(dim=-1), torch.ones(n), atol=1e-5)
    assert not torch.allclose(txt[0], txt[1])


def test_imagebind_text_reads_the_eot_position():
    # Tokens after EOT (padding) must not matter; tokens before it must (causal mask + EOT pooling).
    torch.manual_seed(0)
    model = ImageBindEncoders(tiny_imagebind_config()).eval()
    eot = model.cfg.vocab_size - 1
    ids = torch.zeros(3, 77, dtype=torch.long)
    ids[:, :4] = torch.tensor([eot - 1, 100, 200, eot])
    ids[1, 10] = 300  # after EOT
    ids[2, 2] = 250  # before EOT
    with torch.no_grad():
        out = model.encode_text_ids(ids)
    assert torch.allclose(out[0], out[1], atol=1e-6)
    assert not torch.allclose(out[0], out[2], atol=1e-4)


def test_imagebind_loader_keeps_only_its_modalities_and_checks_layout(tmp_path, tiny_cfg):
    state = torch.load(tiny_cfg.imagebind_weights, weights_only=True)
    # The released file also holds depth/thermal/imu branches and logit scales: ignored.
    extra = dict(
        state,
        **{
            "modality_trunks.depth.blocks.0.norm_1.weight": torch.ones(4),
            "modality_postprocessors.text.1.log_logit_scale": torch.tensor(2.0),
        },
    )
    torch.save(extra, tmp_path / "full.pth")
    load_imagebind(tmp_path / "full.pth", num_heads=(2, 2, 2))
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        load_imagebind(tmp_path / "full.pth", num_heads=(5, 2, 2))
    broken = {k: v for k, v in state.items() if "vision.blocks.0.mlp.fc2" not in k}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(
        ValueError, match=r"weights do not fit ImageBindEncoders \(missing \['modality_trunks.vision"
    ):
        load_imagebind(tmp_path / "broken.pth", num_heads=(2, 2, 2))
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an ImageBind checkpoint"):
        load_imagebind(tmp_path / "other.pth")


def test_tokenizer_must_belong_to_the_weights(tmp_path, tiny_cfg):
    save_merges(tmp_path / "short.gz", TINY_MERGES[:3])
    cfg = dataclasses.replace(tiny_cfg, metrics=["it"], imagebind_bpe=str(tmp_path / "short.gz"))
    with pytest.raises(ValueError, match="does not belong to these weights"):
        load_metric_networks(cfg)


# ---------------------------------------------------------------------------------------------
# AVSync classifier


def test_full_classifier_widths():
    with torch.device("meta"):
        clf = AVSyncClassifier(AudioConv2DNet(), VideoR2Plus1DNet(), FCHead())
        score = clf(torch.empty(2, 1, 128, 204), torch.empty(2, 3, 12, 224, 224))
    assert score.shape == (2,)
    assert list(clf.head.state_dict()) == [
        "fc.0.weight",
        "fc.0.bias",
        "fc.3.weight",
        "fc.3.bias",
        "fc.6.weight",
        "fc.6.bias",
    ]
    assert tuple(clf.video_encoder.conv5x[0].res_conv.weight.shape) == (512, 256, 1, 1, 1)


def test_tiny_classifier_round_trip_in_the_released_layout(tiny_cfg):
    root = tiny_cfg.avsync_classifier
    for sub in AVSyncClassifier.SUBDIRS:
        assert torch.serialization.os.path.exists(f"{root}/{sub}/diffusion_pytorch_model.bin")
    # Released configs carry `pretrained` (the AVID-CMA init switch); it must still load.
    cfg_path = f"{root}/audio_encoder/config.json"
    config = json.load(open(cfg_path))
    config["pretrained"] = True
    json.dump(config, open(cfg_path, "w"))
    clf = load_avsync_classifier(root)
    assert isinstance(clf, SyncScorer) and not clf.training
    mel, video = torch.randn(2, 1, 128, 204), torch.randn(2, 3, 12, 64, 64)
    again = load_avsync_classifier(root)
    with torch.no_grad():
        assert torch.equal(clf(mel, video), again(mel, video))
    with pytest.raises(ValueError, match="sync classifier wants"):
        clf(mel, video[0])


def test_classifier_loader_errors(tmp_path):
    AVSyncClassifier(AudioConv2DNet(4), VideoR2Plus1DNet(4), FCHead(64)).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="head dim 64 does not fit"):
        load_avsync_classifier(tmp_path / "m")
    (tmp_path / "n").mkdir()
    with pytest.raises(FileNotFoundError, match="audio_encoder"):
        load_avsync_classifier(tmp_path / "n")
    (tmp_path / "n" / "audio_encoder").mkdir()
    with pytest.raises(ValueError, match="cannot load .*audio_encoder.*config.json"):
        load_avsync_classifier(tmp_path / "n")


# ---------------------------------------------------------------------------------------------
# Loading by config


def test_only_the_needed_networks_are_loaded(tiny_cfg):
    cfg = dataclasses.replace(
        tiny_cfg,
        metrics=["fid", "sync"],
        i3d_weights="/nonexistent/i3d.pt",
        imagebind_weights="",
        avsync_classifier="",
    )
    nets = load_metric_networks(cfg)
    assert nets.inception is not None and nets.i3d is None and nets.imagebind is None and nets.avsync is None
    assert load_metric_networks(dataclasses.replace(cfg, metrics=["sync"])) == MetricNetworks()
    with pytest.raises(ValueError, match="needs the i3d network"):
        nets.require("i3d", "fvd")
    with pytest.raises(FileNotFoundError, match="i3d_weights"):
        load_metric_networks(dataclasses.replace(cfg, metrics=["fvd"]))
