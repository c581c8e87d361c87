"""From an empty folder to the paper's table (issue 29, item 4), on tiny stand-ins served by a local web server:
`asva fetch all` with the stand-ins' source table, then `make reproduce`'s driver (sweeps/reproduce.py) on the
real local Ray, S3 server and MLflow server: the GPU-hour estimate, nine evaluations of the "released"
checkpoint under `protocol: authors` (guidance 1 / 4 / 8 x seeds 0 / 1 / 2), our row beside the paper's."""

from __future__ import annotations

import math
import re

import pytest
import yaml

from asva_model.build import build_unet
from asva_platform.artifacts.provenance import state_sha256
from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.dev.release import RELEASED, write_release
from asva_platform.errors import run_guarded
from asva_platform.fetch.cli import OVERRIDES_FILE
from asva_platform.fetch.cli import main as fetch_main
from asva_platform.fetch.sources import SOURCES
from sweeps import reproduce
from tests.fetch_server import FileServer
from tests.sweep_helpers import client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """The stand-ins fetched into an empty folder the way a user fetches the real ones."""
    tmp = tmp_path_factory.mktemp("reproduce")
    with FileServer() as server:
        release = write_release(tmp / "release", server.url)
        for key, path in release.hub.items():
            server.served.hub[key] = path.read_bytes()
        for name, path in release.plain.items():
            server.served.plain[name] = path.read_bytes()
        table = tmp / "sources.yaml"
        table.write_text(yaml.safe_dump(release.table))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HF_ENDPOINT", server.url)
            code = run_guarded(fetch_main, ["all", "--dest", str(tmp / "weights"), "--sources", str(table)])
    assert code == 0
    return tmp / "weights", release


def test_reproduce_needs_the_fetched_weights_and_checks_them_before_running(fetched, tmp_path, capsys):
    weights, release = fetched
    assert run_guarded(reproduce.main, ["--weights", str(tmp_path), "--dry-run"]) == 2
    assert f"run `asva fetch all --dest {tmp_path}` first" in capsys.readouterr().err
    tiny = [f"base.{o}" for o in release.tiny_overrides]
    bad = run_guarded(
        reproduce.main, ["--weights", str(weights), "--dry-run", *tiny, "base.eval.max_vidoes=1"]
    )
    assert bad == 2 and "max_vidoes" in capsys.readouterr().err


def test_from_fetched_weights_to_the_papers_table(fetched, s3_server, mlflow_server, ray_cluster, capsys):
    weights, release = fetched
    written = (weights / OVERRIDES_FILE).read_text().split()
    assert {o.split("=")[0] for o in written} >= {
        "model.pretrained_sd",
        "model.init_unet",
        "model.audio_encoder_weights",
        "model.text_encodings",
        "eval.metrics.avsync_classifier",
        "eval.metrics.i3d_weights",
        "dataset.root",
    }
    assert len({s.dest for s in SOURCES}) == len(SOURCES)
    argv = [
        "--weights",
        str(weights),
        "--here",
        "--gpu",
        "H100",
        *[f"base.{o}" for o in release.tiny_overrides],
        f"base.storage.root=s3://{s3_server.bucket}/reproduce-test",
        "base.tracking.experiment=reproduce-test",
        "base.eval.max_videos=1",
        "base.eval.num_workers=1",
        "base.eval.cpus_per_worker=1",
        "resources_per_trial={CPU: 1}",
        "max_concurrent_trials=3",
    ]
    assert run_guarded(reproduce.main, argv) == 0
    out = capsys.readouterr().out
    print(out[out.find("evaluation:") :][:400], out[out.find("AVSync15, the released") :], sep="\n")
    estimate = re.search(
        r"evaluation: 9 trials \(audio guidance 1 / 4 / 8 x 3 seeds\) x 3 clips.*GPU-hours", out
    )
    assert estimate, out[-3000:]
    assert "protocol authors" in out
    table = out[out.index("AVSync15, the released checkpoint") :].splitlines()
    for scale, fvd in ((1, "323.06"), (4, "300.82"), (8, "375.02")):
        paper = [ln for ln in table if re.match(rf"\s+{scale}\s+paper, README", ln)]
        ours = [ln for ln in table if re.match(rf"\s+{scale}\s+ours \(3 seeds x 3 clips\)", ln)]
        assert len(paper) == 1 and fvd in paper[0], table
        assert len(ours) == 1, table
        numbers = [float(v) for v in re.findall(r"(-?\d+\.\d+) \+-", ours[0])]
        assert len(numbers) == len(reproduce.COLUMNS) and all(math.isfinite(v) for v in numbers), ours[0]

    # What the table shows is what the sweep logged: nine evaluations of the released UNet, authors' protocol
    parent = client().get_run(re.search(r"\(MLflow run ([0-9a-f]{32})\)", out).group(1))
    runs = client().search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(runs) == 9
    released = tiny_model_config(
        pretrained_sd=f"{weights}/stable-diffusion-v1-5",
        init_unet=f"{weights}/checkpoints/{RELEASED}/modules/unet",
    )
    unet_hash = state_sha256(build_unet(released))
    seen = set()
    for run in runs:
        p = run.data.params
        seen.add((float(p["generate.audio_guidance_scale"]), int(p["generate.seed"])))
        assert p["provenance.protocol"] == "authors" and p["provenance.net.unet"] == unet_hash
    assert seen == {(s, seed) for s in (1.0, 4.0, 8.0) for seed in (0, 1, 2)}
