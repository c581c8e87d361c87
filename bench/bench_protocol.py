"""What each quirk of the `authors` protocol changes, measured side by side on synthetic data (not a timing).

    python -m bench protocol        (or: python bench/bench_protocol.py [--root DATASET] [--clips 30])

For every quirk of ``asva_platform.experiment.PROTOCOLS`` the clean choice and the authors' are run on the
same inputs, one quirk at a time, and the size of the difference is printed:

* data (sampling.*): the 3 evaluation windows of each video of a synthetic AVSync15 (24/25/29.97/30 fps,
  22.05-48 kHz, mono and stereo): frames picked differently, mean |pixel| difference of the frames, the
  audio window's shift (cross-correlation lag, in 16 kHz samples) and the normalised-mel difference;
* generate.sampler: a tiny random AVSyncD (configs/model/tiny.yaml) sampled from the same noise with 3 and 50
  PNDM steps, max |latent| difference;
* generate.audio_encoder_source: the tiny audio encoder's tokens with fp32 weights vs the same weights rounded
  to fp16 (what the authors' checkpoint stores), max |token| difference;
* model.audio_encoder.drop_path_layout: in train mode, how far tokens move from eval mode (same rate in
  both layouts) and whether the clips of a batch get the same draw;
* eval.metrics.fid_batchnorm: FID of the synthetic windows against a degraded copy (blurred, noisy) with a
  tiny random FID-Inception, BatchNorm in eval mode vs batch statistics per video / per clip.

Numbers from random tiny networks show the mechanism's size, not the full model's; the data figures are
what the real loader does to real-format files.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from asva_model.data.avsync15 import read_split  # noqa: E402
from asva_model.data.config import DatasetConfig, SamplingConfig  # noqa: E402
from asva_model.data.sampling import probe, sample_windows, test_window_starts  # noqa: E402
from asva_model.metrics.compute import extract_clip_scores, summarize  # noqa: E402
from asva_model.metrics.networks import load_metric_networks  # noqa: E402
from asva_model.metrics.networks.tiny import save_tiny_metric_networks  # noqa: E402
from asva_model.models.audio_encoder import ImageBindAudioEncoder  # noqa: E402
from asva_model.pipeline import AVSyncPipeline  # noqa: E402
from asva_model.pretrained import make_tiny_pretrained  # noqa: E402
from asva_platform.dev.fixtures import tiny_model_config  # noqa: E402
from asva_platform.dev.synth import synthesize  # noqa: E402
from asva_platform.experiment import PROTOCOLS  # noqa: E402
from bench.common import write_results  # noqa: E402

DATA_QUIRKS = {
    "frame_picking": ("exact", "authors"),
    "audio_window": ("exact", "authors"),
    "audio_channels": ("mean", "authors"),
    "resampler": ("soxr", "sinc"),
}


def _lag(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> int:
    """The shift (samples) that best aligns ``b`` to ``a`` (b[n] ~ a[n + lag])."""
    mid = slice(max_lag, len(a) - max_lag)
    scores = [float(np.dot(a[mid], np.roll(b, lag)[mid])) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def data_effects(paths: list[str], size: int) -> dict:
    clean = SamplingConfig(image_size=[size, size])
    out = {}
    for quirk, (_, theirs) in DATA_QUIRKS.items():
        other = dataclasses.replace(clean, **{quirk: theirs})
        moved = total = 0
        pixel, mel, lags = [], [], []
        for path in paths:
            info = probe(path, clean)
            if quirk == "audio_channels" and info.channels < 2:
                continue
            starts = list(test_window_starts(info.duration, clean))
            for a, b in zip(sample_windows(path, starts, clean), sample_windows(path, starts, other)):
                moved += int(np.sum(a.frame_times != b.frame_times))
                total += len(a.frame_times)
                pixel.append(float(np.abs(a.frames - b.frames).mean()))
                mel.append(float(np.abs(a.mel - b.mel).max()))
                lags.append(_lag(a.waveform, b.waveform) if quirk == "audio_window" else 0)
        out[quirk] = {
            "windows": len(mel),
            "frames_moved": moved,
            "frames": total,
            "mean_abs_pixel": float(np.mean(pixel)),
            "max_abs_mel_mean": float(np.mean(mel)),
            "max_abs_mel_max": float(np.max(mel)),
            "lag_samples": [int(np.min(lags)), int(np.median(lags)), int(np.max(lags))],
        }
    return out


def sampler_effect(model_cfg) -> dict:
    torch.manual_seed(0)
    pipe = AVSyncPipeline.from_model_config(model_cfg)
    g = torch.Generator().manual_seed(0)
    image, mel = torch.rand(1, 3, 64, 64, generator=g), torch.randn(1, 1, 128, 204, generator=g)
    text = torch.randn(1, 77, model_cfg.unet.cross_attention_dim, generator=g)
    out = {}
    for steps in (3, 50):
        runs = {
            s: pipe(
                image,
                text,
                mel,
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0),
                decode=False,
                sampler=s,
            ).latents
            for s in ("standard", "authors")
        }
        out[f"{steps}_steps_max_abs_latent"] = float((runs["standard"] - runs["authors"]).abs().max())
        out[f"{steps}_steps_latent_std"] = float(runs["standard"][:, :, 1:].std())
    return out


@torch.no_grad()
def encoder_effects() -> dict:
    torch.manual_seed(0)
    enc = ImageBindAudioEncoder(embed_dim=64, num_blocks=4, num_heads=4, head_out_dim=64).eval()
    mel = torch.randn(4, 1, 128, 204)
    fp32 = enc.encode(mel)
    rounded = ImageBindAudioEncoder(embed_dim=64, num_blocks=4, num_heads=4, head_out_dim=64).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in enc.state_dict().items()})
    out = {
        "fp16_weights_max_abs_token": float((rounded.encode(mel) - fp32).abs().max()),
        "token_std": float(fp32.std()),
    }
    for layout in ("per_sample", "authors"):
        train = ImageBindAudioEncoder(
            embed_dim=64, num_blocks=4, num_heads=4, head_out_dim=64, drop_path=0.1, drop_path_layout=layout
        ).train()
        train.load_state_dict(enc.state_dict())
        torch.manual_seed(1)
        same = mel[:1].expand(4, -1, -1, -1)
        tokens = train.encode(same)
        out[f"drop_path_{layout}_mean_abs_shift"] = float((tokens - enc.encode(same)).abs().mean())
        out[f"drop_path_{layout}_batch_shares_draw"] = bool(
            all(torch.equal(tokens[0], t) for t in tokens[1:])
        )
    return out


def fid_effect(paths: list[str], size: int) -> dict:
    cfg = SamplingConfig(image_size=[size, size])
    gt, videos = [], []
    for path in paths:
        for clip in sample_windows(path, list(test_window_starts(probe(path, cfg).duration, cfg)), cfg):
            gt.append(torch.from_numpy(clip.frames).transpose(0, 1))  # (12, 3, H, W)
            videos.append(path)
    g = torch.Generator().manual_seed(0)
    blur = torch.nn.functional.avg_pool2d
    gen = [(blur(c, 3, 1, 1) + 0.05 * torch.randn(c.shape, generator=g)).clamp(0, 1) for c in gt]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        metrics = dataclasses.replace(save_tiny_metric_networks(tmp), metrics=["fid"], fid_image_size=96)
        nets = load_metric_networks(metrics)
    out = {"clips": len(gt)}
    for mode in ("eval", "authors"):
        scores = extract_clip_scores(
            gt,
            gen,
            [np.zeros(32000, np.float32)] * len(gt),
            ["x"] * len(gt),
            nets,
            dataclasses.replace(metrics, fid_batchnorm=mode),
            gt_videos=videos,
        )
        out[f"fid_{mode}"] = summarize(scores, ["fid"])["FID"]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", help="dataset root (default: a generated synthetic AVSync15)")
    p.add_argument("--clips", type=int, default=30, help="videos to use (default 30)")
    p.add_argument("--size", type=int, default=64, help="output frame size (default 64)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    root = (
        a.root
        or synthesize(
            Path(__file__).resolve().parent / "results" / "synth_bench", clips_per_class=2, seed=0, workers=1
        ).out_dir
    )
    listing = read_split(DatasetConfig(root=str(root)), "train").entries
    paths = [str(Path(root) / e.path) for e in listing][: a.clips]
    results = {"quirks": PROTOCOLS, "data": data_effects(paths, a.size)}
    with tempfile.TemporaryDirectory() as tmp:
        results["sampler"] = sampler_effect(make_tiny_pretrained(tmp, tiny_model_config()))
    results["encoder"] = encoder_effects()
    results["fid"] = fid_effect(paths, a.size)

    print(f"{len(paths)} synthetic videos, 3 evaluation windows each; each row: clean vs authors, one quirk")
    for quirk, r in results["data"].items():
        print(
            f"  sampling.{quirk:<15} {r['windows']:3d} windows: frames moved {r['frames_moved']}/{r['frames']}, "
            f"mean |pixel| {r['mean_abs_pixel']:.4f}, max |mel| mean {r['max_abs_mel_mean']:.3f} "
            f"(max {r['max_abs_mel_max']:.3f}), audio lag min/median/max {r['lag_samples']} samples"
        )
    s = results["sampler"]
    print(
        f"  generate.sampler               max |latent| after 3 steps {s['3_steps_max_abs_latent']:.3f}, after 50 "
        f"{s['50_steps_max_abs_latent']:.3f} (latent std {s['50_steps_latent_std']:.3f}; tiny random UNet)"
    )
    e = results["encoder"]
    print(
        f"  generate.audio_encoder_source  fp16-rounded weights: max |token| {e['fp16_weights_max_abs_token']:.2e} "
        f"(token std {e['token_std']:.3f}; tiny random encoder)"
    )
    print(
        f"  drop_path_layout           train-mode mean |token shift| per_sample "
        f"{e['drop_path_per_sample_mean_abs_shift']:.4f} vs authors {e['drop_path_authors_mean_abs_shift']:.4f}; "
        f"one draw for the batch: per_sample {e['drop_path_per_sample_batch_shares_draw']}, "
        f"authors {e['drop_path_authors_batch_shares_draw']}"
    )
    f = results["fid"]
    print(
        f"  eval.metrics.fid_batchnorm FID of {f['clips']} windows vs a blurred noisy copy: eval mode "
        f"{f['fid_eval']:.4g}, batch statistics {f['fid_authors']:.4g} ({f['fid_authors'] / f['fid_eval']:.3g}x; "
        "tiny random FID-Inception)"
    )
    print(f"results: {write_results('protocol', results)}")


if __name__ == "__main__":
    main()
