"""Pretrain a small AutoencoderKL on synthetic AVSync15 frames, for toy-scale runs that need a VAE that
reconstructs.

A random-init VAE decodes noise: a UNet trained on its latents has nothing to learn, and a generated
video never even starts from its conditioning image. SD-1.5's VAE cannot be downloaded here, so the toy
recipe trains one of the configured geometry (``model.vae``) on frames drawn by the synthetic dataset's
own painter (:func:`asva_platform.dev.synth.render_frames`, resized like the data pipeline), then:

* measures its reconstruction PSNR on held-out frames (clips the training frames never came from) and
  refuses to save one below ``min_psnr_db``;
* measures the per-channel latent mean (``latents_mean``, the shift) and the scaling factor as 1 / std of
  the shifted latents (the rule SD's 0.18215 came from), so the diffusion sees zero-mean, unit-variance
  latents (asva_model/latents.py says why the shift matters);
* saves it with ``save_pretrained`` as the ``vae/`` folder of a diffusers SD layout, next to a
  ``pretrain.json`` report, so preprocessing, training and sampling load it unchanged.

Re-running with the same settings reuses the saved VAE.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from asva_model.build import build_vae
from asva_model.config import ModelConfig, VAEPretrainConfig
from asva_model.data.config import SamplingConfig
from asva_model.data.sampling import transform_frames
from asva_model.errors import require
from asva_platform.dev.synth import class_indices, make_spec, render_frames

REPORT_FILE = "pretrain.json"
HELD_OUT_SEED_OFFSET = 7_777  # held-out frames come from clips of another synthetic seed


@dataclass
class VAEPretrainReport:
    psnr_db: float
    """Held-out reconstruction PSNR (posterior mean decoded), in dB."""
    scaling_factor: float
    """1 / std of the shifted held-out latents (sampled from the posterior), saved in the VAE's config."""
    psnr_random_init_db: float
    """The same PSNR for the untrained VAE: what the toy recipe would have without pretraining."""
    steps: int
    seconds: float
    """Wall time of the training (0 when reused)."""
    folder: str
    """The saved ``vae/`` folder."""
    settings: dict = field(default_factory=dict)
    """Everything the weights depend on (a saved VAE is reused only when these match)."""
    reused: bool = False
    latents_mean: list[float] = field(default_factory=list)
    """Per-channel mean of the held-out latents (the shift), saved in the VAE's config."""
    psnr_min_db: float | None = None
    """The worst held-out frame's PSNR: a VAE that fails on some pictures fails those clips' frame 0."""

    def overrides(self) -> list[str]:
        """The dotted overrides that make a config match this VAE (``build_vae`` checks both)."""
        shift = "[" + ",".join(repr(float(m)) for m in self.latents_mean) + "]"
        return [f"model.vae.scaling_factor={self.scaling_factor!r}", f"model.vae.latents_mean={shift}"]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def synthetic_frames(
    classes: list[str], count_clips: int, frames_per_clip: int, image_size: list[int], seed: int
) -> torch.Tensor:
    """(N, 3, H, W) float frames in [0, 1] of ``count_clips`` synthetic clips of ``classes`` (round-robin),
    ``frames_per_clip`` random times each, cropped and resized as the data pipeline does."""
    indices = class_indices(classes)
    sampling = SamplingConfig(image_size=list(image_size))
    rng = np.random.default_rng([seed, 1])
    out = []
    for i in range(count_clips):
        spec = make_spec(seed, indices[i % len(indices)], i // len(indices))
        times = np.sort(rng.uniform(0.0, spec.duration, frames_per_clip))
        out.append(transform_frames(list(render_frames(spec, times)), sampling).transpose(1, 0, 2, 3))
    return torch.from_numpy(np.concatenate(out))


def build_trainable_vae(model_cfg: ModelConfig) -> AutoencoderKL:
    """A fresh AutoencoderKL of ``model_cfg.vae``'s geometry, in train mode."""
    vae = build_vae(dataclasses.replace(model_cfg, pretrained_sd=""))
    return vae.requires_grad_(True).train()


def frame_psnrs(vae: AutoencoderKL, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """(N,) PSNR of each of ``frames`` (N, 3, H, W) in [0, 1] against its reconstruction from the posterior
    mean."""
    out = []
    with torch.no_grad():
        for x in frames.split(batch):
            rec = (vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample.clamp(-1, 1) + 1) / 2
            out.append((rec - x).pow(2).flatten(1).mean(dim=1))
    return 10 * torch.log10(1.0 / torch.cat(out).clamp_min(1e-12))


def pooled_psnr(psnrs: torch.Tensor) -> float:
    """The PSNR of the mean squared error over all frames, from each frame's PSNR."""
    return float(10 * torch.log10(1.0 / (10 ** (-psnrs / 10)).mean()))


def psnr_db(vae: AutoencoderKL, frames: torch.Tensor, batch: int = 64) -> float:
    """PSNR of ``frames`` (N, 3, H, W) in [0, 1] against their reconstruction from the posterior mean (of the
    mean squared error over all frames)."""
    return pooled_psnr(frame_psnrs(vae, frames, batch))


def latent_statistics(
    vae: AutoencoderKL, frames: torch.Tensor, seed: int, batch: int = 64
) -> tuple[list[float], float]:
    """(per-channel mean, 1 / std after subtracting it) of posterior samples of ``frames``' latents."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lat = []
        for x in frames.split(batch):
            dist = vae.encode(x * 2 - 1).latent_dist
            lat.append(dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen))
    z = torch.cat(lat)
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    return [float(m) for m in mean.flatten()], float(1.0 / (z - mean).std())


def _settings(
    model_cfg: ModelConfig, cfg: VAEPretrainConfig, classes: list[str], image_size: list[int]
) -> dict:
    v = model_cfg.vae
    geometry = {
        "block_out_channels": list(v.block_out_channels),
        "layers_per_block": v.layers_per_block,
        "latent_channels": v.latent_channels,
        "norm_num_groups": v.norm_num_groups,
    }
    pretrain = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("threads", "min_psnr_db")}
    return {"vae": geometry, "pretrain": pretrain, "classes": sorted(classes), "image_size": list(image_size)}


def load_report(vae_dir: str | Path) -> VAEPretrainReport | None:
    path = Path(vae_dir) / REPORT_FILE
    if not path.is_file():
        return None
    return VAEPretrainReport(**json.loads(path.read_text()))


def pretrain_vae(
    model_cfg: ModelConfig,
    cfg: VAEPretrainConfig,
    classes: list[str],
    image_size: list[int],
    vae_dir: str | Path,
    log=print,
) -> VAEPretrainReport:
    """Train (or reuse) the VAE and save it to ``vae_dir``; raises ValueError below ``min_psnr_db``."""
    vae_dir = Path(vae_dir)
    settings = _settings(model_cfg, cfg, classes, image_size)
    old = load_report(vae_dir)
    if old is not None and old.settings == settings and (vae_dir / "config.json").is_file():
        require(
            old.psnr_db >= cfg.min_psnr_db,
            "vae_pretrain.min_psnr_db",
            f"the saved VAE at {vae_dir} reconstructs at {old.psnr_db:.2f} dB < {cfg.min_psnr_db} dB",
        )
        return dataclasses.replace(old, reused=True, seconds=0.0)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            return _train(model_cfg, cfg, classes, image_size, vae_dir, settings, log)
    finally:
        torch.set_num_threads(threads)


def _train(
    model_cfg: ModelConfig,
    cfg: VAEPretrainConfig,
    classes: list[str],
    image_size: list[int],
    vae_dir: Path,
    settings: dict,
    log,
) -> VAEPretrainReport:
    t0 = time.perf_counter()
    train = synthetic_frames(classes, cfg.clips, cfg.frames_per_clip, image_size, cfg.seed)
    held_clips = max(len(classes), math.ceil(cfg.held_out_frames / 8))
    held = synthetic_frames(classes, held_clips, 8, image_size, cfg.seed + HELD_OUT_SEED_OFFSET)[
        : cfg.held_out_frames
    ]
    torch.manual_seed(cfg.seed)
    vae = build_trainable_vae(model_cfg)
    before = psnr_db(vae.eval(), held)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    floor = cfg.final_lr_fraction
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(i / max(cfg.steps - 1, 1), 1.0))),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    log(
        f"pretrain-vae: {len(train)} frames of {cfg.clips} clips ({', '.join(classes) or 'all classes'}) at "
        f"{image_size[0]}x{image_size[1]}, {cfg.steps} steps of {cfg.batch_size}; random init {before:.1f} dB"
    )
    for step in range(1, cfg.steps + 1):
        x = train[torch.randint(0, len(train), (cfg.batch_size,), generator=gen)] * 2 - 1
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + cfg.kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        if step % max(cfg.steps // 5, 1) == 0 or step == cfg.steps:
            log(
                f"pretrain-vae: step {step}/{cfg.steps} loss {loss.item():.5f} ({time.perf_counter() - t0:.0f} s)"
            )
    vae.eval().requires_grad_(False)
    psnrs = frame_psnrs(vae, held)
    psnr = pooled_psnr(psnrs)
    shift, scale = latent_statistics(vae, held, cfg.seed)
    seconds = time.perf_counter() - t0
    log(
        f"pretrain-vae: held-out PSNR {psnr:.2f} dB (worst frame {float(psnrs.min()):.2f}; random init "
        f"{before:.2f} dB), latent shift {[round(m, 3) for m in shift]}, scaling factor {scale:.5f}, {seconds:.0f} s"
    )
    require(
        psnr >= cfg.min_psnr_db,
        "vae_pretrain.min_psnr_db",
        f"the trained VAE reconstructs held-out frames at {psnr:.2f} dB < {cfg.min_psnr_db} dB; "
        "train longer (vae_pretrain.steps) or widen model.vae",
    )
    vae.register_to_config(scaling_factor=scale, latents_mean=tuple(shift))
    vae.save_pretrained(vae_dir)
    report = VAEPretrainReport(
        round(psnr, 4),
        scale,
        round(before, 4),
        cfg.steps,
        round(seconds, 2),
        str(vae_dir),
        settings,
        latents_mean=shift,
        psnr_min_db=round(float(psnrs.min()), 4),
    )
    (vae_dir / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report
