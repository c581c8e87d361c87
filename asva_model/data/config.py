"""Dataset and clip-sampling config sections (pure dataclasses; no Ray, no platform imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_model.errors import require


@dataclass
class DatasetConfig:
    root: str = "data/AVSync15"
    """Dataset root (local path or s3://bucket/prefix) holding videos/, train.txt, test.txt, class_mapping.json."""
    train_list: str = "train.txt"
    """Training list file, relative to root: one `<class_dir>/<file>.mp4` per line (or `path,start,end`)."""
    test_list: str = "test.txt"
    """Test list file, relative to root."""
    class_mapping: str = "class_mapping.json"
    """JSON file mapping class folder name -> text prompt, relative to root."""
    list_type: Literal["video", "clip"] = "video"
    """`video`: one path per line; `clip`: `path,start,end` per line (seconds)."""
    max_clips_per_class: int = 0
    """Keep at most this many list entries per class and split (0 = all); for quick runs."""
    classes: list[str] = field(default_factory=list)
    """Keep only list entries of these class folders (empty = every class); e.g. the toy recipe's
    strongly audio-driven classes."""
    videos_dir: str = "videos"
    """Folder under root that list paths are relative to (the real layout: `<root>/videos/<class_dir>/x.mp4`)."""

    def __post_init__(self) -> None:
        require(bool(self.root), "root", "must not be empty")
        require(self.max_clips_per_class >= 0, "max_clips_per_class", "must be >= 0")
        require(len(set(self.classes)) == len(self.classes), "classes", f"has duplicates: {self.classes}")
        require(
            self.list_type in ("video", "clip"), "list_type", f"must be video or clip, got {self.list_type!r}"
        )


@dataclass
class SamplingConfig:
    num_frames: int = 12
    """Frames per clip (the paper: 12)."""
    fps: float = 6.0
    """Frame rate frames are picked at, by timestamp (the paper: 6)."""
    clip_duration: float = 2.0
    """Clip length in seconds (the paper: 2.0 = num_frames / fps)."""
    image_size: list[int] = field(default_factory=lambda: [256, 256])
    """Output frame size [height, width] after antialiased resize + centre crop (the paper: 256x256)."""
    audio_sample_rate: int = 16000
    """Audio is resampled to this rate, mono (ImageBind: 16 kHz)."""
    num_mel_bins: int = 128
    """Log-mel fbank bins (ImageBind: 128)."""
    mel_target_length: int = 204
    """Mel frames after pad/crop (ImageBind: 204)."""
    mel_mean: float = -4.268
    """Mel normalisation mean (ImageBind's audio preprocessing)."""
    mel_std: float = 9.138
    """Mel normalisation std (ImageBind's audio preprocessing)."""
    random_flip: bool = True
    """Training: horizontal flip with p=0.5 per clip (the paper's only augmentation)."""
    grid_aligned: bool = False
    """Snap window starts to the 1/fps grid (what the latent cache stores); False = continuous starts as the paper."""
    test_clips_per_video: int = 3
    """Evaluation windows per test video, evenly spaced: linspace(0, dur - clip_duration, n)."""
    short_clip_tolerance: float = 0.1
    """Seconds a clip may fall short of clip_duration and still be used (window at 0, last frame repeated,
    audio zero-padded at the end); shorter clips are skipped as `too_short`. Real clips of exactly 2.0 s
    often measure a few ms less in their audio stream."""
    min_source_side: int = 16
    """Videos whose native width or height is below this are skipped as `too_small`."""
    frame_picking: Literal["exact", "authors"] = "exact"
    """Which native frame stands for time start + k/fps. `exact`: the first frame presented at or after it.
    `authors`: the official loader's walk (torchvision's video_reader): frame times rounded to whole
    microseconds, a target that advances by an accumulated 1/fps only when a frame is taken, one target per
    frame; where a frame's time equals a target the rounding decides (30 fps: frames 0,5,11,15,20,26,...;
    a 6 fps video read back: 0,1,3,4,...,11,11). Set by the `protocol` switch."""
    audio_window: Literal["exact", "authors"] = "exact"
    """`exact`: clip_samples samples from `start` on one sample grid (zero-padded where a short clip ends).
    `authors`: the whole decoded audio frames whose times (us) lie in [start, start + clip_duration],
    resampled on their own and centre-cropped to clip_samples (a window shifted by tens to hundreds of
    samples; a short one is not padded, its mel is). Set by the `protocol` switch."""
    audio_channels: Literal["mean", "authors"] = "mean"
    """How a multi-channel track becomes mono. `mean`: the channels' mean. `authors`: row 0 of each decoded
    frame's samples taken in decoder memory order as (channels, samples), as the official loader's
    `.view(c, t)`: the first channel for planar codecs (AAC, MP3), the first half of the interleaved samples
    for packed ones. Set by the `protocol` switch."""
    colour_conversion: Literal["accurate", "authors"] = "accurate"
    """Decoded YUV -> RGB. `accurate`: swscale with accurate rounding, honouring the frame's matrix and range
    tags (:func:`asva_model.data.decode.frame_to_rgb`). `authors`: swscale's default path, as torchvision's
    reader (about -1/255 per channel, up to -2.7 on flat colours). Set by the `protocol` switch."""
    resampler: Literal["soxr", "sinc"] = "soxr"
    """Resampling to audio_sample_rate. `soxr`: soxr HQ. `sinc`: torchaudio's default windowed sinc (Hann,
    6 zero crossings, rolloff 0.99), as the official loader. Set by the `protocol` switch."""

    def __post_init__(self) -> None:
        require(self.num_frames >= 2, "num_frames", f"must be >= 2, got {self.num_frames}")
        require(self.fps > 0, "fps", f"must be > 0, got {self.fps}")
        require(self.clip_duration > 0, "clip_duration", f"must be > 0, got {self.clip_duration}")
        require(
            len(self.image_size) == 2 and all(s >= 8 and s % 8 == 0 for s in self.image_size),
            "image_size",
            f"must be [height, width], multiples of 8, got {self.image_size}",
        )
        require(self.audio_sample_rate > 0, "audio_sample_rate", "must be > 0")
        require(self.mel_std > 0, "mel_std", "must be > 0")
        require(self.test_clips_per_video >= 1, "test_clips_per_video", "must be >= 1")
        require(
            0.0 <= self.short_clip_tolerance < self.clip_duration,
            "short_clip_tolerance",
            f"must be in [0, clip_duration), got {self.short_clip_tolerance}",
        )
        require(self.min_source_side >= 1, "min_source_side", "must be >= 1")
        for name, choices in (
            ("frame_picking", ("exact", "authors")),
            ("audio_window", ("exact", "authors")),
            ("audio_channels", ("mean", "authors")),
            ("colour_conversion", ("accurate", "authors")),
            ("resampler", ("soxr", "sinc")),
        ):
            require(
                getattr(self, name) in choices,
                name,
                f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}",
            )
        require(self.num_mel_bins > 3, "num_mel_bins", "must be > 3")
        require(self.mel_target_length >= 1, "mel_target_length", "must be >= 1")
        require(
            abs(self.num_frames / self.fps - self.clip_duration) < 1e-6,
            "clip_duration",
            f"must equal num_frames / fps = {self.num_frames / self.fps:g}, got {self.clip_duration}",
        )

    @property
    def clip_samples(self) -> int:
        """Audio samples per clip window (2.0 s at 16 kHz = 32,000)."""
        return int(round(self.clip_duration * self.audio_sample_rate))
