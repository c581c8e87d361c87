"""Synthetic AVSync15: the real layout, with motion that is truly driven by the audio.

``synthesize(out_dir)`` writes ``videos/<class_dir>/*.mp4`` (H.264 video + AAC audio muxed in one file),
``train.txt`` / ``test.txt`` (90/10 per class), ``class_mapping.json`` and ``synth_ground_truth.json``
(every clip's audio event onsets, durations and pitches, plus native fps/size/rate). Durations vary in
[2, 10] s (skewed short, like the real set), native fps is 24, 25, 29.97 or 30, frames are small and
non-square, audio is 22.05-48 kHz mono or stereo. Each of the 15 classes is a sound type plus a visual
event type driven by the same per-event loudness envelopes: an object that strikes or jumps exactly at
an onset, a flash that fires with a shot, a shape that pulses with loudness, a string that vibrates at a
pitch-dependent rate, a slide that moves to each note's pitch, a stroke that lasts as long as the sound,
a swirl that turns as fast as the sound is loud. Everything is a pure function of (seed, class, index),
so the output is byte-identical for a seed, whatever the number of worker processes.

CLI: ``asva synth --out DIR [--clips-per-class N] [--seed S]`` (``python -m asva_platform.dev.synth``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import av
import numpy as np

from asva_model.data.audio import resample, waveform_to_mel, window_samples
from asva_model.data.avsync15 import AVSYNC15_CLASSES, default_prompt
from asva_model.data.sampling import transform_frames

GROUND_TRUTH_FILE = "synth_ground_truth.json"
MANIFEST_FILE = ".synth_in_progress.json"  # names being written; lets the next run clean up after a crash
GENERATOR_VERSION = 1
FPS_CHOICES = (Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30))
SIZE_CHOICES = ((96, 128), (112, 144), (128, 96), (96, 160))  # (height, width): never square, never 256²
RATE_CHOICES = (22050, 32000, 44100, 48000)
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class ClassStyle:
    """How one class sounds and moves."""

    sound: str
    """Timbre: harmonic | chirp | click | burst | pulsetrain | metal | roar | noise | thud."""
    motion: str
    """Visual event: pulse | strike | jump | flash | oscillate | slide | stroke | rotate."""
    pitch: tuple[float, float]
    """Fundamental range in Hz (noise sounds: band centre)."""
    duration: tuple[float, float]
    """Event duration range in seconds."""
    percussive: bool
    """Exponential decay after a sharp attack (else attack-sustain-release)."""
    color: tuple[int, int, int]
    """Object colour (RGB)."""


STYLES: dict[str, ClassStyle] = {
    "baby_babbling_crying": ClassStyle("harmonic", "pulse", (350, 500), (0.4, 0.9), False, (240, 170, 150)),
    "cap_gun_shooting": ClassStyle("click", "flash", (3000, 3000), (0.12, 0.18), True, (255, 230, 90)),
    "chicken_crowing": ClassStyle("chirp", "pulse", (500, 700), (0.5, 0.9), False, (230, 60, 40)),
    "dog_barking": ClassStyle("roar", "jump", (250, 400), (0.12, 0.25), True, (150, 100, 60)),
    "frog_croaking": ClassStyle("pulsetrain", "pulse", (120, 180), (0.25, 0.5), False, (70, 170, 60)),
    "hammering": ClassStyle("metal", "strike", (1500, 2500), (0.2, 0.3), True, (160, 160, 170)),
    "lions_roaring": ClassStyle("roar", "pulse", (90, 140), (0.7, 1.4), False, (210, 150, 50)),
    "machine_gun_shooting": ClassStyle("burst", "flash", (2500, 2500), (0.3, 0.6), True, (255, 140, 40)),
    "playing_cello": ClassStyle("harmonic", "oscillate", (110, 220), (0.4, 0.9), False, (120, 60, 30)),
    "playing_trombone": ClassStyle("harmonic", "slide", (110, 300), (0.35, 0.8), False, (220, 190, 80)),
    "playing_trumpet": ClassStyle("harmonic", "pulse", (330, 700), (0.25, 0.6), False, (240, 200, 60)),
    "playing_violin__fiddle": ClassStyle("harmonic", "stroke", (400, 900), (0.3, 0.7), False, (170, 90, 40)),
    "sharpen_knife": ClassStyle("noise", "stroke", (4000, 4000), (0.3, 0.5), False, (200, 200, 215)),
    "striking_bowling": ClassStyle("thud", "strike", (70, 90), (0.4, 0.6), True, (40, 40, 120)),
    "toilet_flushing": ClassStyle("noise", "rotate", (600, 600), (0.8, 1.5), False, (90, 150, 230)),
}
assert tuple(STYLES) == AVSYNC15_CLASSES


@dataclass
class ClipSpec:
    """Everything that determines one clip; drawn from (seed, class index, clip index)."""

    class_dir: str
    name: str
    """`<class_dir>/<file>.mp4`, as the lists write it."""
    duration: float
    fps: str
    """Native frame rate as a fraction string, e.g. `30000/1001`."""
    height: int
    width: int
    sample_rate: int
    channels: int
    onsets: list[float]
    """Audio event onsets in seconds: where the sound starts and the visual event happens."""
    event_durations: list[float]
    pitches: list[float]
    amplitudes: list[float]
    seed: int
    """Seed of this clip's noise and layout."""


@dataclass
class SynthSummary:
    out_dir: str
    num_clips: int
    train: int
    test: int
    seconds: float
    """Wall time of the generation (0 when an existing dataset was reused)."""
    total_duration: float
    """Sum of clip durations in seconds."""
    reused: bool
    params: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Specs


def _clip_rng(seed: int, class_idx: int, clip_idx: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, class_idx, clip_idx, GENERATOR_VERSION]))


def make_spec(
    seed: int, class_idx: int, clip_idx: int, min_duration: float = 2.0, max_duration: float = 10.0
) -> ClipSpec:
    rng = _clip_rng(seed, class_idx, clip_idx)
    class_dir = AVSYNC15_CLASSES[class_idx]
    style = STYLES[class_dir]
    # skewed towards short clips like the real set (real: mean 4.37 s, median 3.5 s; this: 4.37 s, 3.9 s)
    duration = round(min_duration + (max_duration - min_duration) * float(rng.beta(0.8, 1.9)), 2)
    fps = FPS_CHOICES[rng.integers(len(FPS_CHOICES))]
    height, width = SIZE_CHOICES[rng.integers(len(SIZE_CHOICES))]
    sample_rate = int(RATE_CHOICES[rng.integers(len(RATE_CHOICES))])
    channels = int(rng.integers(1, 3))
    onsets, durs, pitches, amps = [], [], [], []
    t = float(rng.uniform(0.1, 0.7))
    while True:
        d = float(rng.uniform(*style.duration))
        if t + min(d, 0.15) > duration - 0.05:
            break
        onsets.append(round(t, 4))
        durs.append(round(d, 4))
        pitches.append(round(float(np.exp(rng.uniform(*np.log(style.pitch)))), 2))
        amps.append(round(float(rng.uniform(0.45, 0.95)), 3))
        t += d + float(rng.uniform(0.15, 0.9))  # random gaps: onsets are not periodic
    name = f"{class_dir}/syn{class_idx:02d}x{clip_idx:05d}_000000_000010_0.0_{duration:.2f}.mp4"
    return ClipSpec(
        class_dir,
        name,
        duration,
        str(fps),
        height,
        width,
        sample_rate,
        channels,
        onsets,
        durs,
        pitches,
        amps,
        int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------------------------
# Envelopes: one loudness curve per event drives both the sound and the picture.


def _event_envelope(u: np.ndarray, dur: float, percussive: bool) -> np.ndarray:
    """Loudness of one event at times ``u`` since its onset (0 outside the event)."""
    attack = 0.004 if percussive else 0.03
    if percussive:
        env = np.where(u < attack, u / attack, np.exp(-(u - attack) / (dur / 3.0)))
    else:
        release = min(0.08, dur / 3)
        env = np.clip(np.minimum(u / attack, (dur - u) / release), 0.0, 1.0)
    return np.where((u >= 0) & (u <= dur), env, 0.0)


def loudness(spec: ClipSpec, t: np.ndarray) -> np.ndarray:
    """Summed event loudness at times ``t``."""
    style = STYLES[spec.class_dir]
    out = np.zeros_like(t, dtype=np.float64)
    for o, d, a in zip(spec.onsets, spec.event_durations, spec.amplitudes):
        out += a * _event_envelope(t - o, d, style.percussive)
    return out


# ---------------------------------------------------------------------------------------------
# Audio


def _bandpass_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(f < lo) | (f > hi)] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (np.abs(x).max() + 1e-9)


def _timbre(style: ClassStyle, pitch: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    kind = style.sound
    if kind in ("harmonic", "chirp", "roar", "pulsetrain"):
        glide = np.linspace(1.0, 1.6, n) if kind == "chirp" else 1.0
        vibrato = 1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * t)
        phase = 2 * np.pi * np.cumsum(pitch * glide * vibrato) / sr
        x = sum(np.sin(k * phase) / k**1.2 for k in range(1, 7) if k * pitch < 0.45 * sr)
        if kind == "roar":
            x = 0.6 * x + 0.4 * _bandpass_noise(rng, n, sr, 200, 2500)
        if kind == "pulsetrain":
            x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 28 * t))
        return x
    if kind == "metal":
        return sum(
            np.sin(2 * np.pi * pitch * r * t) * np.exp(-t * k) for r, k in ((1, 10), (2.76, 16), (5.4, 24))
        )
    if kind == "click":
        return _bandpass_noise(rng, n, sr, 800, 0.45 * sr) * np.exp(-t / 0.03)
    if kind == "burst":  # a volley of shots at 12 per second
        shots = np.exp(-((t * 12) % 1.0) / 0.25)
        return _bandpass_noise(rng, n, sr, 600, 0.45 * sr) * shots
    if kind == "thud":
        return 0.7 * np.sin(
            2 * np.pi * np.cumsum(np.linspace(pitch, pitch * 0.6, n)) / sr
        ) + 0.3 * _bandpass_noise(rng, n, sr, 1500, 6000) * np.exp(-t / 0.15)
    if kind == "noise":
        return _bandpass_noise(rng, n, sr, pitch * 0.5, min(pitch * 1.8, 0.45 * sr))
    raise ValueError(f"unknown sound {kind!r}")


def render_audio(spec: ClipSpec) -> np.ndarray:
    """(channels, samples) float32: the events plus a faint noise floor."""
    style = STYLES[spec.class_dir]
    sr = spec.sample_rate
    rng = np.random.default_rng(spec.seed)
    n = int(round(spec.duration * sr))
    x = 0.004 * rng.standard_normal(n)
    for o, d, p, a in zip(spec.onsets, spec.event_durations, spec.pitches, spec.amplitudes):
        i0 = int(round(o * sr))
        m = min(int(round(d * sr)), n - i0)
        if m <= 0:
            continue
        u = np.arange(m) / sr
        x[i0 : i0 + m] += a * _event_envelope(u, d, style.percussive) * _timbre(style, p, m, sr, rng)
    x = 0.8 * x / max(np.abs(x).max(), 1e-6)
    if spec.channels == 2:
        return np.stack([x, 0.9 * x]).astype(np.float32)
    return x[None].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Pictures


def _drive(spec: ClipSpec, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame motion parameters, all functions of the audio events."""
    style = STYLES[spec.class_dir]
    onsets, durs, pitches = (
        np.asarray(spec.onsets),
        np.asarray(spec.event_durations),
        np.asarray(spec.pitches),
    )
    u = t[:, None] - onsets[None, :] if len(onsets) else np.zeros((len(t), 0))
    env = loudness(spec, t)
    m = style.motion
    if m == "strike":  # the object travels for 0.12 s and hits exactly at the onset, then recoils
        approach = np.where((u > -0.12) & (u <= 0), 1 + u / 0.12, 0.0)
        recoil = np.where((u > 0) & (u < 0.3), (1 - u / 0.3) ** 2, 0.0)
        return {"s": np.max(np.maximum(approach, recoil), axis=1, initial=0.0)}
    if m == "jump":  # jumps up at the onset and lands 0.3 s later
        arc = np.where((u >= 0) & (u <= 0.3), 4 * (u / 0.3) * (1 - u / 0.3), 0.0)
        return {"s": np.max(arc, axis=1, initial=0.0)}
    if m == "flash":  # muzzle flash lit while the shot(s) sound, fading over 0.15 s
        lit = np.where(
            (u >= 0) & (u <= durs[None, :] * 0.6),
            1.0,
            np.exp(-np.clip(u - durs[None, :] * 0.6, 0, None) / 0.15) * (u >= 0),
        )
        return {"s": np.max(lit * np.asarray(spec.amplitudes)[None, :], axis=1, initial=0.0)}
    if m in ("pulse", "oscillate", "rotate"):
        fine = np.arange(0.0, spec.duration + 0.01, 0.002)
        # string vibration rate and swirl speed integrate pitch / loudness, sampled at 500 Hz
        current_pitch = np.interp(fine, onsets, pitches) if len(onsets) else np.full_like(fine, 100.0)
        rate = current_pitch / 40.0 if m == "oscillate" else 2.0 * loudness(spec, fine)
        phase = 2 * np.pi * np.cumsum(rate) * 0.002
        return {"env": env, "phase": np.interp(t, fine, phase)}
    if m == "slide":  # moves to each note's pitch position in the 0.12 s before the note starts
        pos = (
            np.log(pitches / style.pitch[0]) / np.log(style.pitch[1] / style.pitch[0]) if len(onsets) else []
        )
        x = np.full(len(t), 0.5)
        prev = 0.5
        for o, p in zip(onsets, pos):
            w = np.clip((t - (o - 0.12)) / 0.12, 0.0, 1.0)
            x = np.where(t >= o - 0.12, prev + (p - prev) * w, x)
            prev = p
        return {"s": x, "env": env}
    if m == "stroke":  # one stroke per sound, lasting exactly as long as it, alternating direction
        x = np.zeros(len(t))
        for i, (o, d) in enumerate(zip(onsets, durs)):
            prog = np.clip((t - o) / d, 0.0, 1.0)
            x = np.where(t >= o, prog if i % 2 == 0 else 1 - prog, x)
        return {"s": x}
    raise ValueError(f"unknown motion {m!r}")


class _Painter:
    """Draws one clip's frames: a static textured background plus the class's moving object."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec, self.style = spec, STYLES[spec.class_dir]
        rng = np.random.default_rng(spec.seed + 1)
        h, w = spec.height, spec.width
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(30, 110, size=3)
        grad = (self.yy / h)[..., None] * rng.uniform(-40, 40, size=3)
        texture = np.kron(rng.uniform(-12, 12, size=(h // 8 + 1, w // 8 + 1)), np.ones((8, 8)))[:h, :w]
        self.background = np.clip(base + grad + texture[..., None], 0, 255).astype(np.float32)
        self.cx, self.cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
        self.unit = min(h, w)
        self.color = np.asarray(self.style.color, dtype=np.float32)

    def _paint(self, img: np.ndarray, mask: np.ndarray, color: np.ndarray, alpha: float = 1.0) -> None:
        img[mask] = (1 - alpha) * img[mask] + alpha * color

    def _disk(self, cx: float, cy: float, rx: float, ry: float | None = None) -> np.ndarray:
        ry = rx if ry is None else ry
        return ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0

    def _box(self, cx: float, cy: float, hw: float, hh: float) -> np.ndarray:
        return (np.abs(self.xx - cx) <= hw) & (np.abs(self.yy - cy) <= hh)

    def frame(self, d: dict[str, float]) -> np.ndarray:
        img = self.background.copy()
        u, cx, cy, col = self.unit, self.cx, self.cy, self.color
        m = self.style.motion
        if m == "pulse":
            r = u * (0.12 + 0.16 * d["env"])
            self._paint(img, self._disk(cx, cy, r * 1.2, r), col)
            self._paint(img, self._disk(cx, cy, r * 0.6, r * 0.6 * d["env"]), np.zeros(3))  # opening mouth
        elif m == "strike":
            if self.spec.class_dir == "striking_bowling":  # ball rolls into the pins
                self._paint(img, self._box(cx + u * 0.35, cy, u * 0.03, u * 0.12), np.full(3, 235.0))
                self._paint(img, self._disk(cx - u * 0.35 + u * 0.62 * d["s"], cy, u * 0.1), col)
            else:  # hammer head comes down onto the anvil
                self._paint(img, self._box(cx, cy + u * 0.3, u * 0.25, u * 0.05), np.full(3, 60.0))
                head_y = cy - u * 0.3 + u * 0.5 * d["s"]
                self._paint(
                    img, self._box(cx, head_y - u * 0.15, u * 0.025, u * 0.15), np.asarray([120, 80, 40.0])
                )
                self._paint(img, self._box(cx, head_y, u * 0.12, u * 0.06), col)
        elif m == "jump":
            self._paint(img, self._disk(cx, cy + u * 0.2 - u * 0.35 * d["s"], u * 0.16, u * 0.12), col)
        elif m == "flash":
            self._paint(
                img, self._box(cx - u * 0.2 - u * 0.05 * d["s"], cy, u * 0.2, u * 0.05), np.full(3, 50.0)
            )
            self._paint(
                img, self._disk(cx + u * 0.08, cy, u * 0.25 * d["s"] + 0.5), col, alpha=min(1.0, d["s"])
            )
            img += 60.0 * d["s"]  # the whole scene lights up
        elif m == "oscillate":
            y = cy + u * 0.15 * d["env"] * np.sin(2 * np.pi * (self.xx - cx) / (u * 0.8) + d["phase"])
            self._paint(img, np.abs(self.yy - y) <= max(1.0, u * 0.025), col)
            self._paint(
                img,
                self._box(cx, cy, u * 0.45, u * 0.22) & ~self._box(cx, cy, u * 0.43, u * 0.2),
                np.full(3, 200.0),
            )
        elif m == "slide":
            self._paint(img, self._box(cx - u * 0.2, cy, u * 0.25, u * 0.03), col)
            sx = cx - u * 0.1 + u * 0.5 * d["s"]
            self._paint(img, self._box(sx, cy, u * 0.2, u * 0.05), col * 0.8)
            self._paint(img, self._disk(cx - u * 0.45, cy, u * (0.08 + 0.06 * d["env"])), col)
        elif m == "stroke":
            x = cx - u * 0.35 + u * 0.7 * d["s"]
            self._paint(img, self._box(cx, cy + u * 0.08, u * 0.45, u * 0.03), np.full(3, 210.0))
            self._paint(img, self._box(x, cy - u * 0.04, u * 0.14, u * 0.03), col)
        elif m == "rotate":
            ang = np.arctan2(self.yy - cy, self.xx - cx)
            rad = np.hypot(self.yy - cy, self.xx - cx)
            arms = np.cos(3 * (ang - d["phase"]) - rad / (u * 0.08)) > 0.3
            self._paint(img, arms & (rad < u * 0.35), col)
            self._paint(img, (rad >= u * 0.35) & (rad < u * 0.4), np.full(3, 235.0))
        return np.clip(img, 0, 255).astype(np.uint8)


def render_frames(spec: ClipSpec, times: np.ndarray) -> np.ndarray:
    """uint8 (N, height, width, 3) frames of ``spec`` at ``times`` (seconds), as ``write_clip`` draws them
    before encoding: for training on frames without an mp4 round trip (e.g. the toy VAE)."""
    t = np.asarray(times, dtype=np.float64)
    drive = _drive(spec, t)
    painter = _Painter(spec)
    return np.stack([painter.frame({k: v[i] for k, v in drive.items()}) for i in range(len(t))])


def render_window(spec: ClipSpec, start: float, sampling) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training window of ``spec`` straight from the generator (no codec): frames (3, f, H, W) in [0, 1]
    at ``sampling.fps`` from ``start``, resized as the reader does; the mono 16 kHz waveform of the window;
    and its normalised mel (1, bins, T). For tests that isolate the model from decoding."""
    times = start + np.arange(sampling.num_frames) / sampling.fps
    frames = transform_frames(list(render_frames(spec, times)), sampling)
    mono = resample(render_audio(spec)[0], spec.sample_rate, sampling.audio_sample_rate)
    wave = window_samples(mono, 0.0, start, sampling)
    return frames, wave, waveform_to_mel(wave, sampling)


# ---------------------------------------------------------------------------------------------
# Encoding


def write_clip(spec: ClipSpec, path: Path) -> None:
    """Render and mux one clip: H.264 (yuv420p) + AAC in an mp4, interleaved by time."""
    fps = Fraction(spec.fps)
    n_frames = max(int(math.floor(spec.duration * fps + 1e-9)), 1)
    t = np.arange(n_frames) / float(fps)
    drive = _drive(spec, t)
    painter = _Painter(spec)
    audio = render_audio(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with av.open(str(tmp), mode="w", format="mp4") as out:
        # Byte-identical output for a seed needs one x264 thread AND MB-tree rate control off: with MB-tree on,
        # 3-30 % of repeated encodes of the same frames differed (measured with PyAV 18's bundled x264).
        vs = out.add_stream(
            "libx264",
            rate=fps,
            options={"crf": "20", "preset": "veryfast", "threads": "1", "x264-params": "no-mbtree=1"},
        )
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, "yuv420p"
        vs.codec_context.thread_count = 1
        layout = "stereo" if spec.channels == 2 else "mono"
        as_ = out.add_stream("aac", rate=spec.sample_rate, layout=layout, options={"aac_coder": "fast"})
        as_.bit_rate = 96000
        chunk, a_pos = 1024, 0
        for i in range(n_frames):
            vf = av.VideoFrame.from_ndarray(
                painter.frame({k: v[i] for k, v in drive.items()}), format="rgb24"
            )
            vf.pts = i
            vf.time_base = 1 / fps
            out.mux(vs.encode(vf))
            until = audio.shape[1] if i == n_frames - 1 else int((i + 1) / fps * spec.sample_rate)
            while a_pos < until:
                block = np.ascontiguousarray(audio[:, a_pos : min(a_pos + chunk, until)])
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
                af.sample_rate, af.pts, af.time_base = spec.sample_rate, a_pos, Fraction(1, spec.sample_rate)
                out.mux(as_.encode(af))
                a_pos += block.shape[1]
        out.mux(vs.encode(None))
        out.mux(as_.encode(None))
    os.replace(tmp, path)


def _write_one(args: tuple[dict, str]) -> str:
    spec_dict, path = args
    write_clip(ClipSpec(**spec_dict), Path(path))
    return path


# ---------------------------------------------------------------------------------------------
# Dataset


def _split(seed: int, class_idx: int, n: int) -> set[int]:
    """Indices of the test clips of one class: 10% (at least 1 when n >= 2), chosen by the seed."""
    n_test = max(1, int(round(n * TEST_FRACTION))) if n >= 2 else 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, class_idx, 7919]))
    return set(rng.permutation(n)[:n_test].tolist())


def _params(
    clips_per_class: int, seed: int, min_duration: float, max_duration: float, classes: tuple[str, ...]
) -> dict:
    # the generator's own source is part of the identity: an edited generator never reuses old output
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    params = {
        "version": GENERATOR_VERSION,
        "code": code,
        "clips_per_class": clips_per_class,
        "seed": seed,
        "min_duration": min_duration,
        "max_duration": max_duration,
    }
    return params if classes == AVSYNC15_CLASSES else {**params, "classes": list(classes)}


def class_indices(classes=None) -> list[int]:
    """Indices (in AVSync15 order) of ``classes`` (None or empty = all 15); a clip's content depends on its
    class index, so a subset holds exactly the clips the full set has for those classes."""
    if not classes:
        return list(range(len(AVSYNC15_CLASSES)))
    unknown = sorted(set(classes) - set(AVSYNC15_CLASSES))
    if unknown:
        raise ValueError(f"classes: unknown {unknown}; choose from {', '.join(AVSYNC15_CLASSES)}")
    return sorted(AVSYNC15_CLASSES.index(c) for c in set(classes))


def synthesize(
    out_dir: str | os.PathLike,
    clips_per_class: int = 100,
    seed: int = 0,
    workers: int = 0,
    min_duration: float = 2.0,
    max_duration: float = 10.0,
    reuse: bool = True,
    classes=None,
) -> SynthSummary:
    """Write a synthetic AVSync15 to ``out_dir`` (see the module doc). ``workers`` processes encode in
    parallel (0 = one per CPU). With ``reuse``, a complete dataset already there with the same parameters
    is kept as is (the ground-truth file is written last and marks completion). ``classes`` (default all
    15) limits the clips to those class folders; class_mapping.json still names all 15."""
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class: must be >= 1, got {clips_per_class}")
    if not (0 < min_duration <= max_duration):
        raise ValueError(
            f"durations: need 0 < min_duration <= max_duration, got {min_duration}, {max_duration}"
        )
    out = Path(out_dir)
    indices = class_indices(classes)
    params = _params(
        clips_per_class, seed, min_duration, max_duration, tuple(AVSYNC15_CLASSES[c] for c in indices)
    )
    gt_path = out / GROUND_TRUTH_FILE
    if reuse and gt_path.is_file():
        gt = json.loads(gt_path.read_text())
        if gt.get("params") == params and all((out / "videos" / n).is_file() for n in gt["clips"]):
            return _summary(out, gt, 0.0, reused=True)
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    previous = _generated_names(out)  # clips an earlier (maybe interrupted) generation left here
    gt_path.unlink(missing_ok=True)  # an interrupted run must not look complete
    specs, train, test = [], [], []
    for c in indices:
        test_idx = _split(seed, c, clips_per_class)
        for i in range(clips_per_class):
            spec = make_spec(seed, c, i, min_duration, max_duration)
            specs.append(spec)
            (test if i in test_idx else train).append(spec.name)
    (out / MANIFEST_FILE).write_text(json.dumps(sorted(previous | {s.name for s in specs})))
    jobs = [(asdict(s), str(out / "videos" / s.name)) for s in specs]
    n_workers = workers or os.cpu_count() or 1
    if n_workers == 1:
        for job in jobs:
            _write_one(job)
    else:  # fork where there is one: spawn would re-run an unguarded calling script in every worker
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(n_workers, mp_context=get_context(method)) as pool:
            list(pool.map(_write_one, jobs, chunksize=8))
    (out / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (out / "test.txt").write_text("".join(f"{n}\n" for n in test))
    mapping = {c: default_prompt(c) for c in AVSYNC15_CLASSES}
    (out / "class_mapping.json").write_text(json.dumps(mapping, indent=2) + "\n")
    split_of = {n: "train" for n in train} | {n: "test" for n in test}
    gt = {
        "params": params,
        "styles": {c: asdict(s) for c, s in STYLES.items()},
        "clips": {s.name: {**asdict(s), "split": split_of[s.name]} for s in specs},
    }
    for name in previous - set(split_of):  # only files this generator wrote earlier, never anything else
        (out / "videos" / name).unlink(missing_ok=True)
    gt_path.write_text(json.dumps(gt, indent=1) + "\n")
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    return _summary(out, gt, time.perf_counter() - t_start, reused=False)


def _generated_names(out: Path) -> set[str]:
    """Clip names a previous generation recorded (ground truth, or the manifest of an interrupted run)."""
    names: set[str] = set()
    if (out / GROUND_TRUTH_FILE).is_file():
        names |= set(json.loads((out / GROUND_TRUTH_FILE).read_text()).get("clips", {}))
    if (out / MANIFEST_FILE).is_file():
        names |= set(json.loads((out / MANIFEST_FILE).read_text()))
    return names


def _summary(out: Path, gt: dict, seconds: float, reused: bool) -> SynthSummary:
    clips = gt["clips"].values()
    return SynthSummary(
        str(out),
        len(gt["clips"]),
        sum(c["split"] == "train" for c in clips),
        sum(c["split"] == "test" for c in clips),
        seconds,
        round(sum(c["duration"] for c in clips), 3),
        reused,
        gt["params"],
    )


def load_ground_truth(root: str | os.PathLike) -> dict[str, ClipSpec]:
    """``{list path: ClipSpec}`` from a synthetic dataset's sidecar."""
    gt = json.loads((Path(root) / GROUND_TRUTH_FILE).read_text())
    fields = set(ClipSpec.__dataclass_fields__)
    return {
        name: ClipSpec(**{k: v for k, v in rec.items() if k in fields}) for name, rec in gt["clips"].items()
    }


def main(argv: list[str] | None = None) -> int:
    """``asva synth --out DIR [--clips-per-class N] [--seed S] [--workers W]``."""
    p = argparse.ArgumentParser(
        prog="asva synth",
        description="Generate a synthetic AVSync15-layout dataset "
        "whose motion is driven by its audio (ground truth in synth_ground_truth.json).",
    )
    p.add_argument("--out", required=True, help="output directory (the dataset root)")
    p.add_argument(
        "--clips-per-class", type=int, default=100, help="clips per class (default 100 = 1,500 clips)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--workers", type=int, default=0, help="encoding processes (default: one per CPU)")
    p.add_argument("--min-duration", type=float, default=2.0, help="shortest clip in seconds (default 2)")
    p.add_argument("--max-duration", type=float, default=10.0, help="longest clip in seconds (default 10)")
    p.add_argument(
        "--classes", default="", help="comma-separated class folders to generate (default: all 15)"
    )
    p.add_argument("--force", action="store_true", help="regenerate even if a matching dataset exists")
    a = p.parse_args(argv)
    try:
        s = synthesize(
            a.out,
            a.clips_per_class,
            a.seed,
            a.workers,
            a.min_duration,
            a.max_duration,
            not a.force,
            [c for c in a.classes.split(",") if c],
        )
    except ValueError as e:
        print(f"asva synth: {e}", file=sys.stderr)
        return 2
    verb = "reused existing" if s.reused else f"wrote in {s.seconds:.1f} s:"
    print(
        f"{verb} {s.num_clips} clips ({s.train} train / {s.test} test, {s.total_duration / 60:.1f} min of "
        f"video) at {s.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
