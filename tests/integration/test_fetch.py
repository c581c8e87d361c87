"""`asva fetch` without the internet (issue 29, items 1 and 2): a local server in the Hub's URL layout (pointed
at with ``HF_ENDPOINT``) and at plain URLs serves small files; fetch, a re-run that transfers nothing, a
corrupt byte, a connection cut mid-file, a wrong revision, files placed by hand."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import pytest

from asva_platform.cli import main as asva_main
from asva_platform.errors import UserError
from asva_platform.experiment import load_experiment
from asva_platform.fetch.cli import OVERRIDES_FILE, describe, fetch, main, validate
from asva_platform.fetch.download import CHUNK, Pin
from asva_platform.fetch.sources import SOURCES, Source, SourceFile
from tests.fetch_server import FileServer

pytestmark = pytest.mark.integration
REPO, REV = "org/tiny-sd", "a" * 40


def _blob(seed: int, n: int) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


UNET = _blob(1, 300_000)
CONFIG = b'{"_class_name": "UNet2DConditionModel"}'
WEIGHTS = _blob(2, 200_000)


def _table(url: str, revision: str = REV, weights: bytes = WEIGHTS) -> tuple[Source, ...]:
    return (
        Source(
            name="sd15",
            kind="hub",
            dest="sd",
            repo=REPO,
            revision=revision,
            description="tiny hub repo",
            files=(
                SourceFile("unet/config.json", Pin(_sha(CONFIG), len(CONFIG))),
                SourceFile("unet/diffusion_pytorch_model.safetensors", Pin(_sha(UNET), len(UNET))),
            ),
            overrides=("model.pretrained_sd={dest}",),
        ),
        Source(
            name="metric-nets",
            kind="url",
            dest="metrics",
            description="plain URL",
            files=(SourceFile("i3d.pt", Pin(_sha(weights), len(weights)), url=f"{url}/files/i3d.pt"),),
            overrides=("eval.metrics.i3d_weights={dest}/i3d.pt",),
        ),
    )


@pytest.fixture
def server(monkeypatch):
    with FileServer() as s:
        s.served.hub[(REPO, REV, "unet/config.json")] = CONFIG
        s.served.hub[(REPO, REV, "unet/diffusion_pytorch_model.safetensors")] = UNET
        s.served.plain["i3d.pt"] = WEIGHTS
        monkeypatch.setenv("HF_ENDPOINT", s.url)
        yield s


def test_fetch_then_a_rerun_transfers_nothing(server, tmp_path):
    lines: list[str] = []
    results = fetch(["all"], tmp_path, _table(server.url), log=lines.append)
    assert all(r.complete for r in results)
    assert (tmp_path / "sd/unet/diffusion_pytorch_model.safetensors").read_bytes() == UNET
    assert (tmp_path / "metrics/i3d.pt").read_bytes() == WEIGHTS
    assert server.gets(f"/{REPO}/resolve/{REV}/unet/config.json")  # the Hub layout, at the pinned revision
    assert not list(tmp_path.rglob("*.part"))
    # the overrides point at what was fetched, as lines and in a file
    overrides = (tmp_path / OVERRIDES_FILE).read_text().split()
    assert overrides == [
        f"model.pretrained_sd={(tmp_path / 'sd').resolve()}",
        f"eval.metrics.i3d_weights={(tmp_path / 'metrics/i3d.pt').resolve()}",
    ]
    assert any(ln.startswith("overrides") for ln in lines)

    before = len(server.served.requests)
    lines.clear()
    results = fetch(["all"], tmp_path, _table(server.url), log=lines.append)
    assert len(server.served.requests) == before  # verified from disk: not one request
    assert {v for r in results for v in r.files.values()} == {"verified"}
    assert lines[:2] == ["sd15: ok (2 verified)", "metric-nets: ok (1 verified)"]


def test_a_corrupt_byte_is_a_one_line_error_and_the_file_is_removed(server, tmp_path):
    bad = bytearray(WEIGHTS)
    bad[1234] ^= 0xFF
    server.served.plain["i3d.pt"] = bytes(bad)
    with pytest.raises(UserError) as err:
        fetch(["metric-nets"], tmp_path, _table(server.url), log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message and "metric-nets/i3d.pt" in message and "sha256" in message
    assert not (tmp_path / "metrics/i3d.pt").exists() and not list(tmp_path.rglob("*.part"))

    # a file corrupted on disk after a good fetch: --verify names it and removes it
    server.served.plain["i3d.pt"] = WEIGHTS
    fetch(["metric-nets"], tmp_path, _table(server.url), log=lambda _: None)
    path = tmp_path / "metrics/i3d.pt"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"metric-nets/i3d.pt: sha256 .* removed"):
        fetch(["metric-nets"], tmp_path, _table(server.url), verify_only=True, log=lambda _: None)
    assert not path.exists()
    # and a plain fetch brings it back
    fetch(["metric-nets"], tmp_path, _table(server.url), log=lambda _: None)
    assert path.read_bytes() == WEIGHTS


def test_a_connection_cut_mid_file_resumes_where_it_broke(server, tmp_path):
    path = f"/{REPO}/resolve/{REV}/unet/diffusion_pytorch_model.safetensors"
    server.served.cut_once[path] = 123_456
    fetch(["sd15"], tmp_path, _table(server.url), log=lambda _: None)
    assert (tmp_path / "sd/unet/diffusion_pytorch_model.safetensors").read_bytes() == UNET
    first, second = [r for _, _, r in server.gets(path)]
    resumed_at = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first == "" and 0 < resumed_at <= 123_456  # the second request asked only for the rest
    assert resumed_at >= 123_456 - CHUNK  # at most one write's worth is fetched twice

    # a partial file left by an interrupted run: the next run asks for the rest only
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/i3d.pt.part").write_bytes(WEIGHTS[:50_000])
    fetch(["metric-nets"], tmp_path, _table(server.url), log=lambda _: None)
    assert (tmp_path / "metrics/i3d.pt").read_bytes() == WEIGHTS
    assert [r for _, _, r in server.gets("/files/i3d.pt")] == ["bytes=50000-"]


def test_a_wrong_revision_is_one_line(server, tmp_path):
    with pytest.raises(UserError) as err:
        fetch(["sd15"], tmp_path, _table(server.url, revision="b" * 40), log=lambda _: None)
    assert str(err.value) == f"sd15: revision {'b' * 40} not found in {REPO}"
    with pytest.raises(UserError, match="revision must be a full commit sha"):
        fetch(["sd15"], tmp_path, _table(server.url, revision="main"), log=lambda _: None)


def test_files_placed_by_hand_are_verified(tmp_path):
    text = b"prompt encodings"
    table = (
        Source(
            name="text-encodings",
            kind="manual",
            dest="text",
            description="by hand",
            where="a Drive folder",
            files=(SourceFile("class.pt", Pin(_sha(text))), SourceFile("null.pt", Pin(""))),
            overrides=("model.text_encodings={dest}/class.pt",),
        ),
    )
    lines: list[str] = []
    results = fetch(["all"], tmp_path, table, log=lines.append)  # nothing placed yet: the instructions
    assert not results[0].complete and "get it from a Drive folder" in "\n".join(lines)
    with pytest.raises(UserError, match="incomplete: text-encodings"):
        main(["--verify", str(tmp_path), "--sources", _write_table(tmp_path, table)])
    (tmp_path / "text").mkdir()
    (tmp_path / "text/class.pt").write_bytes(text)
    (tmp_path / "text/null.pt").write_bytes(b"null")
    lines.clear()
    results = fetch(["all"], tmp_path, table, verify_only=True, log=lines.append)
    assert results[0].complete
    assert f"text-encodings/null.pt: sha256 {_sha(b'null')}" in "\n".join(lines)  # printed, to be pinned
    (tmp_path / "text/class.pt").write_bytes(b"another file")
    with pytest.raises(UserError, match="text-encodings/class.pt: size|text-encodings/class.pt: sha256"):
        fetch(["all"], tmp_path, table, verify_only=True, log=lambda _: None)


def _write_table(folder, table) -> str:
    import yaml

    rows = [
        {
            **{k: v for k, v in dataclasses.asdict(s).items() if k not in ("files", "overrides")},
            "overrides": list(s.overrides),
            "files": [
                {"path": f.path, "sha256": f.pin.sha256, "size": f.pin.size, "url": f.url} for f in s.files
            ],
        }
        for s in table
    ]
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump(rows))
    return str(path)


def test_the_cli_fetches_from_a_table_file(server, tmp_path, capsys):
    table = _write_table(tmp_path, _table(server.url)[:1])
    assert asva_main(["fetch", "sd15", "--dest", str(tmp_path / "w"), "--sources", table]) == 0
    assert (tmp_path / "w/sd/unet/config.json").read_bytes() == CONFIG
    assert "model.pretrained_sd=" in capsys.readouterr().out
    assert asva_main(["fetch", "nothing", "--dest", str(tmp_path / "w"), "--sources", table]) == 2
    assert "unknown source 'nothing'" in capsys.readouterr().err


def test_the_pinned_table(capsys):
    """Every downloadable file is pinned (full sha256, Hub revisions full commits); --list shows them all; the
    overrides a complete fetch prints are valid keys of configs/avsync15.yaml."""
    validate(SOURCES)
    for s in SOURCES:
        for f in s.files:
            assert not f.pin.sha256 or re.fullmatch(r"[0-9a-f]{64}", f.pin.sha256), (s.name, f.path)
            assert s.kind == "manual" or f.pin.sha256
    text = describe(SOURCES)
    docs = open("docs/metrics.md").read()  # docs/metrics.md lists every pinned hash
    for s in SOURCES:
        for f in s.files:
            assert f.pin.sha256 in text and f.path in text
            assert f.pin.sha256 in docs, f.path
    assert main(["--list"]) == 0
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5@" in capsys.readouterr().out
    overrides = [o.format(dest=os.path.join("/w", s.dest)) for s in SOURCES for o in s.overrides]
    config = load_experiment("configs/avsync15.yaml", overrides)
    assert config.model.pretrained_sd == "/w/stable-diffusion-v1-5"
    assert config.eval.metrics.i3d_weights == "/w/metrics/i3d_torchscript.pt"
