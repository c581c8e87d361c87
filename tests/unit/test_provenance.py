"""What produced a number (issue 29, item 3): hashes of files, folders and loaded weights, and which metrics
two evaluations cannot share."""

from __future__ import annotations

import hashlib
import shutil

import torch

from asva_platform.artifacts.provenance import (
    code_version,
    file_sha256,
    incomparable,
    names_sha256,
    state_sha256,
)
from sweeps.comparison import provenance_warnings
from sweeps.report import TrialRow


def test_file_and_folder_hashes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/head").mkdir()
    (tmp_path / "a/head/w.bin").write_bytes(b"weights")
    (tmp_path / "a/config.json").write_text("{}")
    assert file_sha256(tmp_path / "a/head/w.bin") == hashlib.sha256(b"weights").hexdigest()
    folder = file_sha256(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert file_sha256(tmp_path / "b") == folder  # where it lies does not matter
    (tmp_path / "b/head/w.bin").write_bytes(b"weightz")
    assert file_sha256(tmp_path / "b") != folder
    (tmp_path / "b/head/w.bin").write_bytes(b"weights")
    (tmp_path / "b/head/w.bin").rename(tmp_path / "b/head/v.bin")
    assert file_sha256(tmp_path / "b") != folder  # nor does a renamed file go unseen


def test_loaded_weights_hash_alike_whatever_their_file(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    assert state_sha256(other) != state_sha256(net)
    other.load_state_dict(torch.load(tmp_path / "w.pth"))
    assert state_sha256(other) == state_sha256(net)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-6
    assert state_sha256(other) != state_sha256(net)


def test_which_metrics_two_evaluations_cannot_share():
    a = {
        "net.avsync": "a" * 64,
        "net.imagebind": "b" * 64,
        "net.i3d": "c" * 64,
        "videos": "v",
        "protocol": "authors",
    }
    keyvid = {**a, "net.avsync": "d" * 64}
    lines = incomparable(a, keyvid, ["fvd", "relsync", "alignsync", "sync"])
    assert lines == ["relsync, alignsync: not comparable (net.avsync aaaaaaaaaaaa vs dddddddddddd)"]
    assert incomparable(a, {**a, "protocol": "exact"}, ["sync"]) == [
        "sync: not comparable (protocol authors vs exact)"
    ]
    assert (
        incomparable(a, {"net.i3d": "c" * 64}, ["fvd", "relsync"]) == []
    )  # an older record: nothing to hold
    assert incomparable(a, {**a, "net.unet": "x"}, ["fvd"]) == []  # the model may differ: that is the point


def test_sweep_trials_are_checked_against_the_first():
    rows = [TrialRow(str(i), f"trial-{i}", {}, "finished") for i in range(3)]
    base = {"net.avsync": "a" * 64, "videos": "v", "protocol": "exact"}
    prov = {"trial-0": base, "trial-1": dict(base), "trial-2": {**base, "videos": "w"}}
    (line,) = provenance_warnings(rows, prov)
    assert (
        line
        == "trial-2 vs trial-0: fid, fvd, ia, it, relsync, alignsync, sync, avalign, picture: not comparable (videos v vs w)"
    )


def test_names_and_code_version():
    assert names_sha256(["a", "b"]) != names_sha256(["b", "a"])
    version = code_version()
    assert version.split("+")[1] and len(version.split("+")[1]) == 12


def test_compare_names_runs_whose_metrics_cannot_be_set_side_by_side():
    from types import SimpleNamespace

    from asva_platform.compare import provenance_warnings

    def run(label, avsync):
        prov = {"net.avsync": avsync, "net.i3d": "c" * 64, "videos": "v", "protocol": "authors"}
        return SimpleNamespace(
            label=label, record=SimpleNamespace(provenance=prov, metric_families=["fvd", "relsync"])
        )

    ours, keyvid = run("ours", "a" * 64), run("keyvid", "d" * 64)
    assert provenance_warnings([ours, run("again", "a" * 64)]) == []
    assert provenance_warnings([ours, keyvid]) == [
        "keyvid vs ours: relsync: not comparable (net.avsync aaaaaaaaaaaa vs dddddddddddd)"
    ]
