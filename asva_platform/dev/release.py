"""A tiny stand-in of everything `asva fetch all` brings, in each source's own layout, and a source table that
serves it from a local web server: the path from an empty folder to `make reproduce` runs on it without the
internet (tests/integration/test_reproduce.py).

Every source of the pinned table (:data:`asva_platform.fetch.sources.SOURCES`) gets a fixture of the same name
and folder, with tiny files where the real ones go: SD-1.5 in diffusers layout on a Hub-style URL at the pinned
revision, ImageBind's file name, the authors' released checkpoint folder
(``avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules/{unet,audio_encoder}``, their config names), the sync
classifier's ``modules/``, the text-encoding file names and an AVSync15-layout dataset. The manual sources become
plain URLs here, every file pinned by its sha256. ``tiny_overrides`` are what only the tiny geometry needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from asva_model.build import build_audio_encoder, build_unet
from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt
from asva_model.metrics.networks.tiny import save_tiny_metric_networks
from asva_model.pretrained import make_tiny_pretrained, write_authors_layout
from asva_platform.artifacts.provenance import file_sha256
from asva_platform.dev.fixtures import tiny_model_config, tiny_model_overrides
from asva_platform.dev.synth import synthesize
from asva_platform.fetch.sources import SD15_REVISION, SOURCES

RELEASED = "avsync15_audio-cond_cfg/ckpts/checkpoint-37000"
"""The released AVSync15 checkpoint's folder inside the `avsyncd-checkpoints` source."""


@dataclass
class Release:
    table: list[dict]
    """The source table (`asva fetch --sources`), as YAML-ready dicts."""
    hub: dict[tuple[str, str, str], Path]
    """(repo, revision, path) -> the local file a Hub-layout server should serve."""
    plain: dict[str, Path]
    """URL path under ``/files/`` -> the local file."""
    tiny_overrides: list[str]
    """Overrides the tiny stand-ins need beyond what fetch prints (geometry, sizes, steps)."""


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def write_release(work: str | Path, base_url: str, image_size: int = 64) -> Release:
    """Write the stand-ins under ``work/<source dest>/`` and describe them as served from ``base_url``."""
    work = Path(work)
    dest = {s.name: work / s.dest for s in SOURCES}
    model_cfg = make_tiny_pretrained(
        work / "tiny",
        prompts=tuple(default_prompt(c) for c in AVSYNC15_CLASSES),
        model_cfg=tiny_model_config(),
    )
    # SD-1.5's folder is the tiny "pretrained" SD; its text encodings go where the authors' files go
    sd = Path(model_cfg.pretrained_sd)
    text = dest["text-encodings"]
    text.mkdir(parents=True, exist_ok=True)
    Path(model_cfg.text_encodings).replace(text / "class_clip_text_encodings_stable-diffusion-v1-5.pt")
    Path(model_cfg.null_text_encoding).replace(text / "openai-clip-l_null_text_encoding.pt")
    imagebind = dest["imagebind"]
    imagebind.mkdir(parents=True, exist_ok=True)
    Path(model_cfg.audio_encoder_weights).replace(imagebind / "imagebind_huge.pth")
    model_cfg = tiny_model_config(
        pretrained_sd=str(sd), audio_encoder_weights=str(imagebind / "imagebind_huge.pth")
    )

    # the released checkpoint: the inflated SD UNet with moved temporal and audio layers, the encoder in fp16
    unet = build_unet(model_cfg)
    generator = torch.Generator().manual_seed(37000)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "_temp" in name or "_audio" in name:
                p.add_(0.02 * torch.randn(p.shape, generator=generator))
    write_authors_layout(unet, build_audio_encoder(model_cfg).half(), dest["avsyncd-checkpoints"] / RELEASED)

    nets = save_tiny_metric_networks(work / "tiny" / "metric_nets")
    metrics = dest["metric-nets"]
    metrics.mkdir(parents=True, exist_ok=True)
    Path(nets.inception_weights).replace(metrics / "pt_inception-2015-12-05-6726825d.pth")
    Path(nets.i3d_weights).replace(metrics / "i3d_torchscript.pt")
    # the metric ImageBind is a second tiny file (the real one file serves both: a tiny geometry cannot)
    Path(nets.imagebind_weights).replace(imagebind / "imagebind_metrics_tiny.pth")
    Path(nets.imagebind_bpe).replace(imagebind / "bpe_simple_vocab_16e6.txt.gz")
    dest["sync-classifier"].mkdir(parents=True, exist_ok=True)
    Path(nets.avsync_classifier).replace(dest["sync-classifier"] / "modules")
    synthesize(dest["avsync15"], clips_per_class=2, max_duration=3.0, seed=0)

    overrides = {
        "sd15": ["model.pretrained_sd={dest}"],
        "imagebind": [
            "model.audio_encoder_weights={dest}/imagebind_huge.pth",
            "eval.metrics.imagebind_weights={dest}/imagebind_metrics_tiny.pth",
            "eval.metrics.imagebind_bpe={dest}/bpe_simple_vocab_16e6.txt.gz",
        ],
    }
    table, hub, plain = [], {}, {}
    for source in SOURCES:
        folder = dest[source.name]
        entry = {
            "name": source.name,
            "dest": source.dest,
            "description": f"tiny stand-in of {source.name}",
            "overrides": overrides.get(source.name, list(source.overrides)),
            "files": [],
        }
        if source.name == "sd15":
            folder = sd
            entry.update(kind="hub", repo=source.repo, revision=SD15_REVISION)
        else:
            entry["kind"] = "url"
        for rel in _files_under(folder):
            f = {"path": rel, "sha256": file_sha256(folder / rel), "size": (folder / rel).stat().st_size}
            if source.name == "sd15":
                hub[(source.repo, SD15_REVISION, rel)] = folder / rel
            else:
                name = f"{source.name}/{rel}"
                plain[name] = folder / rel
                f["url"] = f"{base_url}/files/{name}"
            entry["files"].append(f)
        table.append(entry)

    tiny = [
        *tiny_model_overrides(),
        f"sampling.image_size=[{image_size},{image_size}]",
        f"eval.metrics.imagebind_num_heads={list(nets.imagebind_num_heads)}".replace(" ", ""),
        "eval.metrics.fid_image_size=80",
        "eval.metrics.fvd_image_size=64",
        f"eval.metrics.batch_size={nets.batch_size}",
        "generate.num_inference_steps=2",
    ]
    return Release(table, hub, plain, tiny)
