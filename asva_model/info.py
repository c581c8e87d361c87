"""Parameter accounting of AVSyncD, built on the ``meta`` device (no memory, no weights).

``model_info(model_cfg)`` -> {"total", "trainable", "frozen", "groups": {ff_temporal_conv, temporal_attn,
audio_cross_attn, unet2d, audio_encoder, vae}, ...}. "total" counts everything the model loads (UNet,
audio encoder, VAE); the CLIP text encoder is not part of it because text encodings are precomputed.

CLI: ``python -m asva_model.info --config experiment.yaml [--json]`` reads the file's ``model`` section
(following ``base:`` includes); ``asva model-info`` calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from asva_model.build import build_audio_encoder, build_unet, build_vae
from asva_model.config import ModelConfig, model_config_from_dict
from asva_model.models.trainable import PARAM_GROUPS, parameter_group

GROUPS = (*PARAM_GROUPS, "unet2d", "audio_encoder", "vae")


def model_info(model_cfg: ModelConfig) -> dict:
    unet = build_unet(model_cfg, device="meta")
    groups = dict.fromkeys(GROUPS, 0)
    trainable = 0
    for name, param in unet.named_parameters():
        groups[parameter_group(name)] += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    groups["audio_encoder"] = sum(p.numel() for p in build_audio_encoder(model_cfg, device="meta").parameters())
    groups["vae"] = sum(p.numel() for p in build_vae(model_cfg, device="meta").parameters())
    total = sum(groups.values())
    return {
        "preset": model_cfg.preset,
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "unet": sum(groups[g] for g in (*PARAM_GROUPS, "unet2d")),
        "groups": groups,
        "trainable_modules": list(model_cfg.trainable_modules),
    }


def _read_yaml_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML file with ``base: other.yaml`` (relative) merged underneath it, recursively."""
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: circular base: include")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_read_yaml_tree(path.parent / base, (*seen, path)), data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_model_config(path: str | Path) -> ModelConfig:
    """The ``model`` section of an experiment YAML (defaults when absent)."""
    data = _read_yaml_tree(Path(path))
    return model_config_from_dict(data.get("model") or {}, f"{path}: model")


def _human(info: dict) -> str:
    lines = [f"AVSyncD ({info['preset']}): {info['total'] / 1e6:.1f}M parameters, "
             f"{info['trainable'] / 1e6:.1f}M trainable, {info['frozen'] / 1e6:.1f}M frozen"]
    lines += [f"  {name:<18} {count / 1e6:10.2f}M" for name, count in info["groups"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asva model-info", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="experiment YAML (its `model` section is used); default: the paper's model")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        cfg = load_model_config(args.config) if args.config else ModelConfig()
    except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = model_info(cfg)
    print(json.dumps(info) if args.json else _human(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
