"""Reader for the real AVSync15 layout (local directory or a path inside a ``pyarrow.fs.FileSystem``).

Layout (asva.md §2)::

    <root>/videos/<class_dir>/<name>.mp4
    <root>/train.txt, <root>/test.txt     one `<class_dir>/<name>.mp4` per line (list type `video`)
                                          or `<class_dir>/<name>.mp4,start,end` (list type `clip`)
    <root>/class_mapping.json             {class_dir: text prompt}

Every list line becomes a :class:`ClipEntry` or a :class:`~asva_model.data.errors.Skipped` record with a
typed reason; nothing is dropped silently.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import IO, Any

from asva_model.data.config import DatasetConfig
from asva_model.data.errors import Skipped, SkipReason

AVSYNC15_CLASSES: tuple[str, ...] = (
    "baby_babbling_crying",
    "cap_gun_shooting",
    "chicken_crowing",
    "dog_barking",
    "frog_croaking",
    "hammering",
    "lions_roaring",
    "machine_gun_shooting",
    "playing_cello",
    "playing_trombone",
    "playing_trumpet",
    "playing_violin__fiddle",
    "sharpen_knife",
    "striking_bowling",
    "toilet_flushing",
)
"""The 15 class folder names exactly as the dataset spells them (note the double underscore)."""


def default_prompt(class_dir: str) -> str:
    """The text form of a class folder name: underscores become single spaces ("playing violin fiddle")."""
    return " ".join(part for part in class_dir.split("_") if part)


@dataclass(frozen=True)
class ClipEntry:
    """One usable list entry."""

    path: str
    """File path relative to the dataset root, e.g. `videos/dog_barking/x.mp4`."""
    name: str
    """The path as the list writes it (`dog_barking/x.mp4`); unique within a split, used as the clip id."""
    class_dir: str
    """Class folder (the first component of ``name``)."""
    prompt: str
    """Text prompt of the class (class_mapping.json)."""
    start: float | None = None
    """Scene start in seconds (list type `clip`); None = the whole file."""
    end: float | None = None
    """Scene end in seconds (list type `clip`); None = the whole file."""


@dataclass
class SplitListing:
    """A split as read from its list: usable entries plus every skipped line with its reason."""

    split: str
    entries: list[ClipEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def counts_per_class(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.class_dir] = counts.get(e.class_dir, 0) + 1
        return counts

    def skip_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s.reason.value] = counts.get(s.reason.value, 0) + 1
        return counts


# ---------------------------------------------------------------------------------------------
# Paths and file access: one code path for local disks and pyarrow filesystems (S3).


def join_path(root: str, *parts: str) -> str:
    """``root/part/...`` with forward slashes: what pyarrow filesystems and POSIX paths both take."""
    return posixpath.join(root, *parts)


def file_size(root: str, rel: str, filesystem: Any = None) -> int | None:
    """Size in bytes of ``root/rel``; None when it does not exist (or is not a file)."""
    path = join_path(root, rel)
    if filesystem is None:
        return os.path.getsize(path) if os.path.isfile(path) else None
    info = filesystem.get_file_info(path)
    return info.size if info.is_file else None


def file_sizes(root: str, rels: list[str], filesystem: Any = None) -> list[int | None]:
    """:func:`file_size` for many files; one batched metadata call on a pyarrow filesystem."""
    if filesystem is None:
        return [file_size(root, r) for r in rels]
    infos = filesystem.get_file_info([join_path(root, r) for r in rels]) if rels else []
    return [i.size if i.is_file else None for i in infos]


def open_file(root: str, rel: str, filesystem: Any = None) -> IO[bytes]:
    """A readable, seekable binary file object for ``root/rel`` that PyAV can decode from.

    Local files are opened directly. From a pyarrow filesystem (S3) the object is read whole into memory:
    PyAV seeks back and forth through an mp4 (the index may sit at the end), and one GET per clip of a few
    MB is far cheaper than dozens of ranged reads.
    """
    path = join_path(root, rel)
    if filesystem is None:
        return open(path, "rb")
    with filesystem.open_input_stream(path) as f:
        return io.BytesIO(f.readall())


def read_text(root: str, rel: str, filesystem: Any = None) -> str:
    with open_file(root, rel, filesystem) as f:
        return f.read().decode("utf-8")


# ---------------------------------------------------------------------------------------------
# class_mapping.json and list files


def read_class_mapping(cfg: DatasetConfig, filesystem: Any = None, root: str = "") -> dict[str, str]:
    """``{class_dir: prompt}`` from class_mapping.json; a missing or malformed file is a clear error. ``root``: where
    the dataset is opened (see :func:`read_split`)."""
    root = root or cfg.root
    if file_size(root, cfg.class_mapping, filesystem) is None:
        raise FileNotFoundError(f"{join_path(root, cfg.class_mapping)}: class mapping not found")
    try:
        mapping = json.loads(read_text(root, cfg.class_mapping, filesystem))
    except json.JSONDecodeError as e:
        raise ValueError(f"{join_path(root, cfg.class_mapping)}: not valid JSON ({e})") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValueError(f"{join_path(root, cfg.class_mapping)}: must be a JSON object {{class_dir: prompt}}")
    return mapping


def _parse_line(line: str, list_type: str) -> tuple[str, float | None, float | None]:
    """(path, start, end) of one list line; raises ValueError with the reason it is malformed."""
    if list_type == "clip":
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            raise ValueError(f"expected `path,start,end`, got {len(parts)} field(s)")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"start/end must be numbers, got {parts[1]!r}, {parts[2]!r}") from None
        if not (0.0 <= start < end):
            raise ValueError(f"need 0 <= start < end, got start={start:g}, end={end:g}")
        path = parts[0]
    else:
        path, start, end = line, None, None
    if path.startswith("/") or "\\" in path:
        raise ValueError("path must be relative with forward slashes")
    comps = path.split("/")
    if len(comps) < 2 or any(c in ("", ".", "..") for c in comps):
        raise ValueError("path must be `<class_dir>/<file>` without empty, `.` or `..` components")
    return path, start, end


def read_split(
    cfg: DatasetConfig, split: str, filesystem: Any = None, check_files: bool = True, root: str = ""
) -> SplitListing:
    """Read ``train`` or ``test`` (or a list file name relative to root) into a :class:`SplitListing`.

    The dataset is opened at ``root``: ``cfg.root`` itself (default) for a local directory, or its path inside
    ``filesystem`` (``bucket/prefix`` for S3; :func:`asva_platform.datasets.dataset_access` gives both).
    Lines are checked for format, class (against class_mapping.json), duplicates, and with
    ``check_files`` for existence and zero size (one batched metadata call on S3). Decoding problems
    are found later, per clip, by :func:`asva_model.data.sampling.probe_entries`.
    """
    root = root or cfg.root
    list_file = {"train": cfg.train_list, "test": cfg.test_list}.get(split, split)
    if file_size(root, list_file, filesystem) is None:
        raise FileNotFoundError(f"{join_path(root, list_file)}: list file not found")
    mapping = read_class_mapping(cfg, filesystem, root)
    unknown = sorted(set(cfg.classes) - set(mapping))
    if unknown:
        raise ValueError(
            f"dataset.classes: {unknown} not in {cfg.class_mapping} ({', '.join(sorted(mapping))})"
        )
    wanted = set(cfg.classes or mapping)
    listing = SplitListing(split=split)
    seen: set[str] = set()
    per_class: dict[str, int] = {}
    candidates: list[tuple[int, str, ClipEntry]] = []
    for line_no, raw in enumerate(read_text(root, list_file, filesystem).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # blank lines and comments are not entries

        def skip(reason: SkipReason, detail: str, line=line, line_no=line_no) -> None:
            listing.skipped.append(Skipped(line, reason, detail, list_file, line_no))

        try:
            path, start, end = _parse_line(line, cfg.list_type)
        except ValueError as e:
            skip(SkipReason.BAD_LIST_ENTRY, str(e))
            continue
        class_dir = path.split("/")[0]
        if class_dir not in mapping:
            skip(SkipReason.UNKNOWN_CLASS, f"class folder {class_dir!r} is not in {cfg.class_mapping}")
            continue
        if class_dir not in wanted:
            continue  # a requested subset, not bad input
        key = f"{path},{start},{end}"
        if key in seen:
            skip(SkipReason.BAD_LIST_ENTRY, "duplicate entry")
            continue
        seen.add(key)
        if cfg.max_clips_per_class and per_class.get(class_dir, 0) >= cfg.max_clips_per_class:
            continue  # a requested cap, not bad input: counted by max_clips_per_class, not a skip
        per_class[class_dir] = per_class.get(class_dir, 0) + 1
        entry = ClipEntry(
            join_path(cfg.videos_dir, path) if cfg.videos_dir else path,
            path,
            class_dir,
            mapping[class_dir],
            start,
            end,
        )
        candidates.append((line_no, line, entry))

    sizes = file_sizes(root, [e.path for _, _, e in candidates], filesystem) if check_files else None
    for i, (line_no, line, entry) in enumerate(candidates):
        size = sizes[i] if sizes is not None else 1
        if size is None:
            listing.skipped.append(
                Skipped(
                    line,
                    SkipReason.MISSING_FILE,
                    f"{join_path(root, entry.path)} does not exist",
                    list_file,
                    line_no,
                )
            )
        elif size == 0:
            listing.skipped.append(
                Skipped(
                    line,
                    SkipReason.EMPTY_FILE,
                    f"{join_path(root, entry.path)} has 0 bytes",
                    list_file,
                    line_no,
                )
            )
        else:
            listing.entries.append(entry)
    return listing
