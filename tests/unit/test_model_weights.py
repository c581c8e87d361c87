"""asva_model.weights: strict loading into ordinary and meta modules, one-line errors, weight-file reading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asva_model.errors import AsvaError
from asva_model.weights import WeightsError, load_state_dict_file, load_strict


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_loads_into_an_ordinary_module_and_returns_it():
    src, dst = _net(), _net()
    assert load_strict(dst, src.state_dict(), "src") is dst
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_a_meta_module_takes_the_tensors():
    src = _net()
    with torch.device("meta"):
        dst = _net()
    load_strict(dst, src.state_dict(), "src")
    assert not any(p.is_meta for p in dst.parameters())
    assert torch.equal(dst[0].weight, src[0].weight)


def test_a_missing_num_batches_tracked_is_tolerated_as_torch_does():
    src = {k: v for k, v in _net().state_dict().items() if not k.endswith("num_batches_tracked")}
    load_strict(_net(), src, "src")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.pop("0.weight"),
            r"src: weights do not fit Sequential \(missing \['0.weight'\], unexpected \[\]\)",
        ),
        (lambda s: s.update({"9.weight": torch.zeros(1)}), r"\(missing \[\], unexpected \['9.weight'\]\)"),
        (lambda s: s.update({"2.weight": torch.zeros(2, 5)}), r"shape mismatch \['2.weight'\]"),
        (lambda s: [s.pop(k) for k in list(s)[:5]], r"missing \['0.bias', '0.weight', '1.bias'\] \+2 more"),
    ],
)
def test_weights_that_do_not_fit_are_one_line(change, message):
    state = _net().state_dict()
    change(state)
    with pytest.raises(WeightsError, match=message) as err:
        load_strict(_net(), state, "src")
    assert "\n" not in str(err.value) and isinstance(err.value, (ValueError, AsvaError))


def test_state_dict_files(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "wrapped.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "wrapped.pt", "w")["w"], torch.ones(2))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="w: cannot read"):
        load_state_dict_file(tmp_path / "junk.pt", "w")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_state_dict_file(tmp_path / "missing.pt", "w")
