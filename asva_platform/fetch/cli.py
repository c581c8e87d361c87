"""`asva fetch SOURCE... --dest DIR`: download, verify, and print the overrides that use what was fetched.

    asva fetch all --dest weights/            # every source; a second run verifies and downloads nothing
    asva fetch sd15 imagebind --dest weights/
    asva fetch --list                         # the pinned table: sources, revisions, sizes, hashes
    asva fetch --verify weights/              # check what is there, the files placed by hand included

Hub sources honour ``HF_ENDPOINT`` (a mirror) and ``HF_TOKEN``; ``--sources FILE`` replaces the pinned table
with a YAML list of the same fields (a lab mirror, or the test fixtures). Sources that need a person (Google
Drive) are printed with where to get each file and where to put it. At the end the overrides that point
``configs/avsync15.yaml`` at the fetched files are printed and written to ``DIR/asva-overrides.txt``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asva_platform.errors import UserError, run_guarded
from asva_platform.fetch.download import Pin, check, download, is_verified
from asva_platform.fetch.sources import NAMES, SOURCES, Source, SourceFile, by_name

OVERRIDES_FILE = "asva-overrides.txt"
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class SourceResult:
    name: str
    complete: bool
    overrides: list[str]
    files: dict[str, str] = field(default_factory=dict)
    """path -> what happened: ``verified`` (already there), ``downloaded``, ``placed`` (manual, checked),
    ``missing``."""
    sha256: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The table


def load_table(path: str | Path) -> tuple[Source, ...]:
    """A source table from YAML (a list of sources with the fields of :class:`Source`; each file has
    ``path``, ``sha256``, optional ``size`` and ``url``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"--sources {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, list):
        raise UserError(f"--sources {path}: expected a list of sources")
    table = []
    for i, item in enumerate(raw):
        try:
            files = tuple(
                SourceFile(f["path"], Pin(f.get("sha256", ""), f.get("size")), f.get("url", ""))
                for f in item.pop("files")
            )
            item["overrides"] = tuple(item.get("overrides", ()))
            table.append(Source(files=files, **item))
        except (KeyError, TypeError) as err:
            raise UserError(f"--sources {path}: source {i}: {err}") from None
    return tuple(table)


def validate(table: tuple[Source, ...]) -> None:
    """Every downloadable file is pinned, every Hub source at a full commit sha."""
    for s in table:
        if s.kind == "hub" and not _FULL_SHA.match(s.revision):
            raise UserError(f"source {s.name}: revision must be a full commit sha, got {s.revision!r}")
        for f in s.files:
            if s.kind != "manual" and not f.pin.sha256:
                raise UserError(f"source {s.name}: {f.path} has no sha256 pinned")
            if s.kind == "url" and not f.url:
                raise UserError(f"source {s.name}: {f.path} has no url")


def describe(table: tuple[Source, ...]) -> str:
    """The table as `asva fetch --list` prints it."""
    lines = []
    for s in table:
        where = {
            "hub": f"hf://{s.repo}@{s.revision}",
            "url": "https",
            "manual": "by hand",
        }[s.kind]
        sizes = [f.pin.size for f in s.files if f.pin.size]
        total = f", {_size(sum(sizes))}" if sizes else ""
        lines.append(f"{s.name}  [{where}{total}]  -> {s.dest}/")
        lines.append(f"    {s.description}")
        if s.where:
            lines.append(f"    from: {s.where}")
        for f in s.files:
            digest = f.pin.sha256 or "(not published)"
            size = f" {f.pin.size:>13,d} B" if f.pin.size else ""
            lines.append(f"    {digest}{size}  {f.path}" + (f"  <- {f.url}" if f.url else ""))
        if s.note:
            lines.append(f"    note: {s.note}")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


# ---------------------------------------------------------------------------------------------
# Hub


def hub_url(source: Source, path: str) -> str:
    from huggingface_hub import constants, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return hf_hub_url(
        source.repo, path, revision=source.revision, repo_type=source.repo_type, endpoint=endpoint.rstrip("/")
    )


def hub_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers()  # the user's token (HF_TOKEN or `hf auth login`); never printed


def hub_error(source: Source, path: str):
    """One line for the Hub's refusals (its ``X-Error-Code`` header), else None."""

    def explain(r) -> str | None:
        code = r.headers.get("X-Error-Code", "")
        if code == "RevisionNotFound":
            return f"{source.name}: revision {source.revision} not found in {source.repo}"
        if code == "EntryNotFound":
            return f"{source.name}: {source.repo}@{source.revision[:12]} has no file {path}"
        if code == "GatedRepo" or r.status_code == 403:
            return f"{source.name}: {source.repo} is gated: accept its terms on the Hub and set HF_TOKEN"
        if code == "RepoNotFound" or r.status_code == 401:
            return f"{source.name}: repo {source.repo} not found (or private: set HF_TOKEN)"
        return None

    return explain


# ---------------------------------------------------------------------------------------------
# Fetching and verifying


def fetch_source(source: Source, dest: Path, verify_only: bool = False, log=print) -> SourceResult:
    """Bring one source's files under ``dest/source.dest`` (or only check them) and say what happened."""
    folder = (dest / source.dest).resolve()
    result = SourceResult(source.name, True, [o.format(dest=folder) for o in source.overrides])
    for f in source.files:
        target = folder / f.path
        label = f"{source.name}/{f.path}"
        if source.kind == "manual" or verify_only:
            if not target.is_file():
                result.files[f.path] = "missing"
                result.complete = False
                continue
            result.sha256[f.path] = check(target, f.pin, label)
            result.files[f.path] = "placed" if source.kind == "manual" else "verified"
            if not f.pin.sha256:
                log(f"  {label}: sha256 {result.sha256[f.path]} (not pinned in the project: record it)")
            continue
        if is_verified(target, f.pin):
            result.files[f.path] = "verified"
            result.sha256[f.path] = f.pin.sha256
            continue
        if source.kind == "hub":
            url, headers, explain = hub_url(source, f.path), hub_headers(), hub_error(source, f.path)
        else:
            url, headers, explain = f.url, None, None
        result.sha256[f.path] = download(url, target, f.pin, label, headers=headers, describe_error=explain)
        result.files[f.path] = "downloaded"
    if source.name == "avsync15" and result.complete:
        missing = missing_videos(folder)
        if missing:
            result.complete = False
            result.files["videos/"] = f"missing {len(missing)} videos, e.g. {', '.join(missing[:3])}"
    return result


def missing_videos(root: Path) -> list[str]:
    """Videos named by train.txt / test.txt that are not under ``root/videos``."""
    names = []
    for split in ("train.txt", "test.txt"):
        names += [ln.strip() for ln in (root / split).read_text().splitlines() if ln.strip()]
    return [n for n in names if not (root / "videos" / n).is_file()]


def fetch(
    names: list[str],
    dest: str | Path,
    table: tuple[Source, ...] = SOURCES,
    verify_only: bool = False,
    log=print,
) -> list[SourceResult]:
    """Fetch (or verify) the named sources; print a line per source and the overrides of the complete ones."""
    validate(table)
    try:
        sources = by_name(names, table)
    except ValueError as err:
        raise UserError(str(err)) from None
    dest = Path(dest)
    results = []
    for source in sources:
        r = fetch_source(source, dest, verify_only, log)
        results.append(r)
        counts = {k: list(r.files.values()).count(k) for k in ("downloaded", "verified", "placed")}
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        if r.complete:
            log(f"{source.name}: ok ({shown})")
            continue
        log(f"{source.name}: needs a person -> {dest.resolve() / source.dest}")
        if source.where:
            log(f"  get it from {source.where}")
        for path, what in r.files.items():
            if what != "verified" and what != "placed":
                log(f"  {what}: {path}")
    overrides = [o for r in results if r.complete for o in r.overrides]
    if overrides:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / OVERRIDES_FILE).write_text(" ".join(overrides) + "\n")
        log(f"overrides (also in {dest / OVERRIDES_FILE}):\n  {' '.join(overrides)}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asva fetch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="SOURCE", help=f"{', '.join(NAMES)} or all")
    parser.add_argument("--dest", default=None, help="folder the sources go into")
    parser.add_argument("--list", action="store_true", help="print the pinned table and exit")
    parser.add_argument(
        "--verify", metavar="DIR", default=None, help="check DIR (every source, or those named)"
    )
    parser.add_argument("--sources", default=None, help="YAML source table replacing the pinned one")
    args = parser.parse_args(argv)
    table = load_table(args.sources) if args.sources else SOURCES
    if args.list:
        validate(table)
        print(describe(table))
        return 0
    if args.verify:
        results = fetch(args.names or ["all"], args.verify, table, verify_only=True)
        bad = [r.name for r in results if not r.complete]
        if bad:
            raise UserError(f"--verify {args.verify}: incomplete: {', '.join(bad)}")
        return 0
    if not args.names or not args.dest:
        parser.error("name the sources to fetch (or all) and --dest DIR")
    fetch(args.names, args.dest, table)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
