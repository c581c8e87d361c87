"""The evaluation worker: generate a video's windows, write them as mp4, re-decode them, score them.

One :class:`EvalWorker` loads the model and the metric networks once and then processes whole videos
(:class:`~asva_platform.evaluation.plan.VideoTask`), so a video is decoded once for all its windows. The
same class runs in the calling process (``eval.parallel: false``) or as a Ray actor.

Per window:

1. sample the ground-truth window (frames, 16 kHz audio, mel) exactly as training data is sampled;
2. generate from its first frame + mel + class prompt (the ``generate`` section), write ``videos/<clip>.mp4``
   (6 fps H.264 + the window's audio as AAC 16 kHz) under the evaluation's output URI -- unless that file
   is already there from an interrupted run of the same evaluation, which is then reused;
3. decode that mp4 again (frames and audio) with the dataset's own sampler, so compression is part of
   the score, as in the paper;
4. optionally write the ground truth as ``gt/<clip>.mp4`` for the comparison page.

The video's windows are then scored together (:func:`extract_clip_scores`); the driver reduces all shards.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asva_model.config import ModelConfig
from asva_model.data.avsync15 import open_file
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_model.data.sampling import SampledClip, sample_clip, sample_windows
from asva_model.metrics.compute import ClipScores, extract_clip_scores
from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.networks import MetricNetworks, load_metric_networks
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.artifacts.evaluation import ClipRecord
from asva_platform.artifacts.provenance import file_sha256
from asva_platform.datasets import dataset_access
from asva_platform.errors import UserError
from asva_platform.evaluation.plan import VideoTask
from asva_platform.inference.animator import AnimatorWorker
from asva_platform.inference.config import GenerateConfig
from asva_platform.storage import Storage, StorageConfig, is_s3, join

# Weight fields of each metric network (the BPE file only matters for IT).
_NETWORK_FIELDS = {
    "inception": ("inception_weights",),
    "i3d": ("i3d_weights",),
    "imagebind": ("imagebind_weights",),
    "avsync": ("avsync_classifier",),
}


def metric_weight_fields(metrics_cfg: MetricsConfig) -> list[str]:
    fields = [f for net in metrics_cfg.required_networks() for f in _NETWORK_FIELDS[net]]
    return fields + (["imagebind_bpe"] if "it" in metrics_cfg.metrics else [])


def check_metric_weights(metrics_cfg: MetricsConfig, storage: Storage) -> None:
    """Every weight file the selected metrics need exists (local, or on S3); UserError names the key."""
    for name in metric_weight_fields(metrics_cfg):
        path = getattr(metrics_cfg, name)
        found = (
            (storage.exists(path) or bool(storage.list(path)))
            if is_s3(path)
            else Path(path).expanduser().exists()
        )
        if not found:
            raise UserError(
                f"eval.metrics.{name}: {path} does not exist (weights are never downloaded; "
                f"metrics {', '.join(metrics_cfg.metrics)} need it)"
            )


def localize_metrics(metrics_cfg: MetricsConfig, storage: Storage, scratch: str | Path) -> MetricsConfig:
    """``metrics_cfg`` with the s3:// weights the selected metrics need copied under ``scratch``."""
    remote = {
        f: getattr(metrics_cfg, f)
        for f in metric_weight_fields(metrics_cfg)
        if is_s3(getattr(metrics_cfg, f))
    }
    return dataclasses.replace(
        metrics_cfg, **{f: str(storage.localize(u, scratch)) for f, u in remote.items()}
    )


def clip_uris(out_uri: str, clip_name: str) -> tuple[str, str]:
    """(generated, ground-truth) mp4 URIs of a clip under an evaluation's output URI."""
    return join(out_uri, "videos", f"{clip_name}.mp4"), join(out_uri, "gt", f"{clip_name}.mp4")


@dataclass
class WorkerSpec:
    """Everything a worker needs; plain data, so it travels to Ray actors."""

    model: ModelConfig
    sampling: SamplingConfig
    generate: GenerateConfig
    metrics: MetricsConfig
    dataset: DatasetConfig
    storage: StorageConfig
    checkpoint: ResolvedCheckpoint
    """The resolved checkpoint (resolved once on the driver)."""
    out_uri: str
    """The evaluation's output URI (videos/, gt/)."""
    save_gt_videos: bool = True
    """Also write each window's ground truth as mp4 (``eval.save_gt_videos``)."""
    device: str = "auto"
    """`cuda`, `cpu` or `auto` (cuda when the worker sees a GPU)."""
    num_threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""


@dataclass
class VideoResult:
    video: str
    """The video's list name."""
    scores: ClipScores
    """Per-window features and scores, in window order."""
    clips: list[ClipRecord] = field(default_factory=list)
    """One record per window."""
    generated: int = 0
    """Windows generated by this call (the rest were reused from an interrupted run)."""
    generate_seconds: float = 0.0
    score_seconds: float = 0.0
    provenance: dict[str, str] = field(default_factory=dict)
    """sha256 of the networks the worker used (:func:`network_provenance`)."""


def network_provenance(metrics_cfg: MetricsConfig, animator_provenance: dict[str, str]) -> dict[str, str]:
    """The model's (as loaded) and each selected metric network's file (local, after localizing) sha256."""
    out = dict(animator_provenance)
    for name in metric_weight_fields(metrics_cfg):
        key = "net." + name.removesuffix("_weights").removesuffix("_classifier")  # net.inception, net.avsync
        out[key] = file_sha256(getattr(metrics_cfg, name))
    return out


class EvalWorker(AnimatorWorker):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec, "asva-eval-")
        self.spec = spec
        self.root, self.fs = dataset_access(spec.dataset, self.storage)
        self.metrics_cfg = localize_metrics(spec.metrics, self.storage, self.scratch / "metrics")
        try:
            self.nets = load_metric_networks(self.metrics_cfg, self.device)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"eval.metrics: {str(err).splitlines()[0]}") from None
        self.provenance = network_provenance(self.metrics_cfg, self.animator.provenance)

    def _local(self, sub: str, clip_name: str) -> Path:
        path = self.scratch / sub / f"{clip_name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _store(self, local: Path, uri: str) -> None:
        self.storage.upload_file(local, uri)  # one atomic write, local or S3
        local.unlink(missing_ok=True)

    def run(self, task: VideoTask) -> VideoResult:
        """Generate (or reuse), re-decode and score every window of one video."""
        s, entry = self.spec.sampling, task.entry
        with open_file(self.root, entry.path, self.fs) as f:
            gt = sample_windows(f, [w.start for w in task.windows], s)
        result = VideoResult(entry.name, ClipScores(), provenance=self.provenance)
        gen_frames, redecoded_clips = [], []
        t0 = time.perf_counter()
        for window, clip in zip(task.windows, gt):
            video_uri, gt_uri = clip_uris(self.spec.out_uri, window.name)
            local = self._local("videos", window.name)
            if self.storage.exists(video_uri):
                self.storage.download_file(video_uri, local)
            else:
                frames = self.animator.animate(clip.frames[:, 0], clip.mel, entry.prompt)
                self.animator.write(local, frames, clip.audio)
                result.generated += 1
            redecoded = sample_clip(local, 0.0, s)  # what the metrics see: the mp4, compression included
            self._store(local, video_uri)
            gen_frames.append(torch.from_numpy(redecoded.frames))
            redecoded_clips.append(redecoded)
            if self.spec.save_gt_videos and not self.storage.exists(gt_uri):
                gt_local = self._local("gt", window.name)
                self.animator.write(gt_local, clip.frames.transpose(1, 0, 2, 3), clip.audio)
                self._store(gt_local, gt_uri)
            result.clips.append(
                ClipRecord(
                    window.name,
                    entry.name,
                    entry.class_dir,
                    entry.prompt,
                    window.index,
                    round(window.start, 6),
                    video_uri,
                    gt_uri if self.spec.save_gt_videos else "",
                )
            )
        result.generate_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        # IT text: the class folder name with underscores, as the paper's evaluation.
        result.scores = score_windows(gt, gen_frames, redecoded_clips, task, self.nets, self.metrics_cfg, s)
        result.score_seconds = time.perf_counter() - t1
        return result


def score_windows(
    gt: list[SampledClip],
    gen_frames: list[torch.Tensor],
    gen: list[SampledClip],
    task: VideoTask,
    nets: MetricNetworks,
    metrics_cfg: MetricsConfig,
    s: SamplingConfig,
) -> ClipScores:
    """Score one video's windows: ``gt`` sampled from the dataset, ``gen`` re-decoded from the generated mp4s
    (``gen_frames`` their frames). The ImageBind and sync-classifier metrics score the mels the sampling
    protocol defined (``SampledClip.mel``), the weights-free ones the padded waveforms."""
    # IT text: the class folder name with underscores, as the paper's evaluation.
    return extract_clip_scores(
        [torch.from_numpy(c.frames) for c in gt],
        gen_frames,
        [c.waveform for c in gt],
        [w.class_name for w in task.windows],
        nets,
        metrics_cfg,
        sample_rate=s.audio_sample_rate,
        fps=s.fps,
        gen_audio=[c.waveform for c in gen],
        sampling=s,
        gt_videos=[task.entry.name] * len(gt),
        mels=[c.mel for c in gt],
        gen_mels=[c.mel for c in gen],
    )
