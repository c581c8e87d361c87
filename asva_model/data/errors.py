"""Typed reasons for skipping a clip: bad input is recorded, never a crash of the whole dataset."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from asva_model.errors import AsvaError


class SkipReason(str, Enum):
    """Why a list entry or a clip file cannot be used. The value is what reports and caches record."""

    BAD_LIST_ENTRY = "bad_list_entry"
    """A list line that cannot be parsed (bad `path,start,end`, absolute path, `..`, duplicate...)."""
    UNKNOWN_CLASS = "unknown_class"
    """The first path component is not a class of class_mapping.json."""
    MISSING_FILE = "missing_file"
    """The list names a file that does not exist."""
    EMPTY_FILE = "empty_file"
    """The file has zero bytes."""
    CORRUPT_VIDEO = "corrupt_video"
    """The container cannot be opened, or video decoding fails or ends early (truncated file)."""
    CORRUPT_AUDIO = "corrupt_audio"
    """Audio decoding fails or ends early."""
    NO_VIDEO_STREAM = "no_video_stream"
    """The container has no video stream."""
    NO_AUDIO_STREAM = "no_audio_stream"
    """The container has no audio stream."""
    TOO_SHORT = "too_short"
    """min(video, audio) duration is shorter than one clip window."""
    TOO_SMALL = "too_small"
    """The video's native width or height is below the configured minimum (e.g. a 1x1 video)."""


class BadClipError(AsvaError):
    """Raised for one unusable clip; callers record ``reason`` and go on with the next clip."""

    def __init__(self, reason: SkipReason, detail: str, path: str = "") -> None:
        self.reason = SkipReason(reason)
        self.detail = detail
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{self.reason.value}: {detail}")

    def with_path(self, path: str) -> BadClipError:
        """The same error, naming ``path`` (the decoder does not know the list path)."""
        return BadClipError(self.reason, self.detail, path)


@dataclass(frozen=True)
class Skipped:
    """One list entry left out, with its typed reason and a human-readable detail."""

    entry: str
    """The list line (or clip path) as written."""
    reason: SkipReason
    """Why it was left out."""
    detail: str
    """What exactly was wrong."""
    list_file: str = ""
    """The list file the entry came from (empty when it came from a probe)."""
    line_no: int = 0
    """1-based line in ``list_file`` (0 when unknown)."""

    def to_dict(self) -> dict:
        return {
            "entry": self.entry,
            "reason": self.reason.value,
            "detail": self.detail,
            "list_file": self.list_file,
            "line_no": self.line_no,
        }
