"""Sync curves: a clip's audio onset envelope and each video's motion energy on one time axis.

What the weights-free Sync metric correlates (:mod:`asva_model.metrics.sync`), drawn so that a person sees
whether the motion lands on the sounds: an inline SVG under each clip of ``asva compare``'s page, and a PNG
grid of a few clips per evaluation in MLflow. Videos are decoded as the metric decodes them (the
evaluation's sampling section, window at 0); the envelope comes from the first readable video's own audio
track, which is the window's ground-truth audio in every column. Each curve is scaled to its own maximum:
the picture is about *when* things happen, the Sync number about how well they agree.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asva_model.data.config import SamplingConfig
from asva_model.data.errors import BadClipError
from asva_model.data.sampling import sample_clip
from asva_model.metrics.sync import Curve, motion_curve, onset_curve
from asva_platform import config as cfgmod
from asva_platform.artifacts.evaluation import EvaluationRecord

COLOURS = ("#222222", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
"""Column i's colour (column 0: the ground truth), matplotlib's tab10 after black, so page and PNG agree."""
ONSET_COLOUR = "#bdbdbd"

# SVG geometry (px): a strip under a clip row, the time axis labelled along its bottom.
SVG_WIDTH, SVG_HEIGHT = 600, 76
_LEFT, _RIGHT, _TOP, _BOTTOM = 14, 14, 4, 16

# PNG grid: panels of PANEL_INCHES at PNG_DPI, PNG_COLUMNS across (size = exactly figsize * dpi).
PANEL_INCHES = (4.0, 2.0)
PNG_DPI = 100
PNG_COLUMNS = 2


def column_colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _line_width(i: int) -> float:
    """The ground truth's line is drawn first and wider, so a run that matches it still shows it as a rim."""
    return 3.0 if i == 0 else 1.5


@dataclass
class ClipCurves:
    """One clip's curves."""

    duration: float
    """The time axis runs over [0, duration] s."""
    onset: Curve | None
    """The audio's onset envelope (None: no readable video)."""
    motion: list[Curve | None]
    """Motion energy per column, in the columns' order (None: missing or unreadable)."""


def sampling_of(record: EvaluationRecord) -> SamplingConfig:
    """The sampling an evaluation cut its clips with (defaults where its record predates the field)."""
    return cfgmod.from_dict(SamplingConfig, record.sampling, f"evaluation {record.name}: sampling")


def evenly_spread(items: list, count: int) -> list:
    """At most ``count`` of ``items`` (0 = all), spread evenly, in order."""
    if not count or len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def clip_curves(videos: list[bytes | None], sampling: SamplingConfig) -> ClipCurves:
    """The curves of one clip from its columns' mp4 bytes (None = missing), ground truth first."""
    decoded = []
    for data in videos:
        try:
            decoded.append(sample_clip(io.BytesIO(data), 0.0, sampling) if data else None)
        except BadClipError:  # one unreadable video leaves a gap in the picture, not a failed page
            decoded.append(None)
    audio = next((c.waveform for c in decoded if c is not None), None)
    return ClipCurves(
        sampling.clip_duration,
        onset_curve(audio, sampling.audio_sample_rate) if audio is not None else None,
        [motion_curve(c.frames, sampling.fps) if c is not None else None for c in decoded],
    )


def _scaled(curve: Curve, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points within the axis, values over their own maximum (a flat curve stays at 0)."""
    keep = curve.times <= duration + 1e-9
    values = curve.values[keep]
    top = values.max() if len(values) else 0.0
    return curve.times[keep], values / top if top > 0 else np.zeros_like(values)


def _ticks(duration: float) -> np.ndarray:
    step = 0.5 if duration <= 4 else 1.0
    return np.arange(0.0, duration + 1e-9, step)


def svg(curves: ClipCurves, labels: list[str]) -> str:
    """An inline SVG strip: the onset envelope as a grey area, one line per column in its colour, the time
    axis in seconds; hovering a curve names it. '' when nothing could be read."""
    if curves.onset is None and not any(curves.motion):
        return ""
    width, base = SVG_WIDTH - _LEFT - _RIGHT, SVG_HEIGHT - _BOTTOM
    height = base - _TOP

    def points(times: np.ndarray, values: np.ndarray) -> str:
        xs = _LEFT + width * times / curves.duration
        ys = base - height * values
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))

    parts = [
        f'<svg class="sync" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" '
        'xmlns="http://www.w3.org/2000/svg" font-size="10" font-family="sans-serif">'
    ]
    if curves.onset is not None:
        t, v = _scaled(curves.onset, curves.duration)
        area = (
            f"{_LEFT:.1f},{base:.1f} {points(t, v)} {_LEFT + width * t[-1] / curves.duration:.1f},{base:.1f}"
        )
        parts.append(
            f'<polygon class="onset" fill="{ONSET_COLOUR}" points="{area}"><title>audio onsets</title></polygon>'
        )
    for i, (curve, label) in enumerate(zip(curves.motion, labels)):
        if curve is not None:
            parts.append(
                f'<polyline class="motion" fill="none" stroke="{column_colour(i)}" stroke-width="{_line_width(i):g}" '
                f'points="{points(*_scaled(curve, curves.duration))}"><title>{html.escape(label)}: motion'
                "</title></polyline>"
            )
    parts.append(f'<line x1="{_LEFT}" y1="{base}" x2="{_LEFT + width}" y2="{base}" stroke="#888"/>')
    for tick in _ticks(curves.duration):
        x = _LEFT + width * tick / curves.duration
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 3}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{SVG_HEIGHT - 3}" text-anchor="middle" fill="#555">{tick:g} s</text>'
        )
    return "".join(parts) + "</svg>"


def _grid(panels: int) -> tuple[int, int]:
    """(columns, rows) of :func:`draw_png`'s grid."""
    columns = min(PNG_COLUMNS, max(panels, 1))
    return columns, -(-max(panels, 1) // columns)


def png_size(panels: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`draw_png`'s image of ``panels`` clips."""
    columns, rows = _grid(panels)
    return round(columns * PANEL_INCHES[0] * PNG_DPI), round(rows * PANEL_INCHES[1] * PNG_DPI)


def draw_png(panels: list[tuple[str, ClipCurves]], labels: list[str], path: str | Path) -> Path:
    """A grid of (title, curves) panels as a PNG at ``path``: each the onset envelope (grey area) and one
    motion line per column (``labels``, colours as on the comparison page) on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, rows = _grid(len(panels))
    figsize = (columns * PANEL_INCHES[0], rows * PANEL_INCHES[1])
    fig, axes = plt.subplots(rows, columns, figsize=figsize, dpi=PNG_DPI, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, curves) in zip(axes.flat, panels):
        if curves.onset is not None:
            ax.fill_between(*_scaled(curves.onset, curves.duration), color=ONSET_COLOUR, label="audio onsets")
        for i, (curve, label) in enumerate(zip(curves.motion, labels)):
            if curve is not None:
                ax.plot(
                    *_scaled(curve, curves.duration),
                    color=column_colour(i),
                    linewidth=_line_width(i) * 0.8,
                    marker=".",
                    label=label,
                )
        ax.set_xlim(0.0, curves.duration)
        ax.set_ylim(0.0, 1.05)
        ax.set_xticks(_ticks(curves.duration))
        ax.set_yticks([])
        ax.set_ylabel("scaled to max", fontsize=7)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("s", fontsize=7, labelpad=1)
    legend = {}  # one entry per label, from whichever panel drew it (a clip may lack a column)
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(
            legend.values(), legend.keys(), loc="upper center", ncol=len(legend), fontsize=7, frameon=False
        )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.22 / (rows * PANEL_INCHES[1])))  # the top 0.22 in: the legend
    path = Path(path)
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path
