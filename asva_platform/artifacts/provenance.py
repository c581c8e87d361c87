"""What produced a number: the sha256 of every network an evaluation used, of the videos it scored, of the
text encodings, with the protocol and the code version (issue 29, item 3).

Metric networks are hashed as files (the same sha256 `asva fetch` pins, so a record says which download it
used); the UNet, VAE and audio encoder as the tensors actually loaded (a DeepSpeed checkpoint and its export
hash alike). Two evaluations whose metric networks differ are not comparable on the metrics those networks
compute: :func:`incomparable` says which and why (KeyVID's sync classifier is not the authors' one, though
both call their numbers RelSync and AlignSync).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


CHUNK = 1 << 20

# Which provenance entries each metric depends on, besides the scored videos, the protocol and the sampling.
METRIC_NETWORKS: dict[str, tuple[str, ...]] = {
    "fid": ("net.inception",),
    "fvd": ("net.i3d",),
    "ia": ("net.imagebind",),
    "it": ("net.imagebind", "net.imagebind_bpe"),
    "relsync": ("net.avsync",),
    "alignsync": ("net.avsync", "net.imagebind"),
    "sync": (),
    "avalign": (),
    "picture": (),
}
SHARED = ("videos", "protocol")
"""Entries every metric depends on: the scored test videos (their names) and the protocol."""


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a folder (each file's relative path and sha256, in path order)."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict as loaded (names, dtypes, shapes, bytes): the same weights hash alike
    whatever file format they came from."""
    import torch  # here, not at the top: `asva fetch` hashes files with this module and never loads torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def names_sha256(names: Iterable[str]) -> str:
    """sha256 of a list of names (the scored videos), one per line, in the given order."""
    return hashlib.sha256("".join(f"{n}\n" for n in names).encode()).hexdigest()


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``<package version>+<sha256 of the package sources, 12 hex>``: the code that ran, with or without git
    (a Ray job's working directory has no .git)."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import asva_model  # the packages' own files: imported here only to find them on disk
        import asva_platform  # (as above)

        digest = hashlib.sha256()
        for package in (asva_model, asva_platform):
            root = Path(package.__file__).parent
            for f in sorted(root.rglob("*.py")):
                digest.update(f"{f.relative_to(root.parent).as_posix()}\0".encode())
                digest.update(f.read_bytes())
        try:
            version = metadata.version("asva-platform")
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "0"
        _CODE_VERSION = f"{version}+{digest.hexdigest()[:12]}"
    return _CODE_VERSION


def incomparable(a: Mapping[str, str], b: Mapping[str, str], metrics: Iterable[str]) -> list[str]:
    """One line per metric family of ``metrics`` that two evaluations' provenance makes incomparable, naming
    what differs (entries missing from an older record are not held against it)."""
    by_reason: dict[str, list[str]] = {}  # metrics that differ for the same reason share a line
    for metric in metrics:
        keys = (*METRIC_NETWORKS.get(metric, ()), *SHARED)
        differ = [k for k in keys if k in a and k in b and a[k] != b[k]]
        if differ:
            by_reason.setdefault(", ".join(f"{k} {a[k][:12]} vs {b[k][:12]}" for k in differ), []).append(
                metric
            )
    return [f"{', '.join(names)}: not comparable ({reason})" for reason, names in by_reason.items()]


def to_params(provenance: Mapping[str, str]) -> dict[str, str]:
    """MLflow params: ``provenance.<entry>``."""
    return {f"provenance.{k}": str(v) for k, v in provenance.items()}
