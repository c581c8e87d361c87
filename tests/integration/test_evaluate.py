"""`jobs.evaluate` end to end on a synthetic test split: Ray actors, outputs on the S3 server, metrics and
the per-class table in the MLflow server's training run."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import torch

from asva_model.build import build_unet
from asva_platform.artifacts.provenance import code_version, file_sha256, names_sha256, state_sha256
from asva_platform.dev.fixtures import tiny_eval_overrides
from asva_platform.errors import run_guarded
from asva_platform.experiment import load_experiment
from asva_platform.storage import Storage
from asva_platform.tracking import TAG_CHECKPOINT, TAG_EVAL_LATEST, TAG_EXPORT, start_run
from jobs import evaluate as evaluate_job

pytestmark = pytest.mark.integration
PAPER_METRICS = ("FID", "FVD", "IA", "IT", "RelSync", "AlignSync", "Sync")
SYNC_CONTROLS = (
    "Sync_ci_low",
    "Sync_ci_high",
    "Sync_shifted",
    "Sync_win_rate",
    "Sync_win_rate_ci_low",
    "Sync_win_rate_ci_high",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, s3_server, mlflow_server, ray_cluster):
    tmp = tmp_path_factory.mktemp("evaluate")
    overrides = tiny_eval_overrides(tmp_path_factory.getbasetemp() / "eval_inputs")  # 64x64, 2 PNDM steps
    root = f"s3://{s3_server.bucket}/evaluate-test/{tmp.name}"
    overrides += [
        f"storage.root={root}",
        "tracking.experiment=evaluate-test",
        "eval.max_videos=2",
        "eval.num_workers=2",
        "eval.cpus_per_worker=1",
    ]
    cfg = load_experiment(None, overrides)
    # A "training run" whose export is a UNet with moved temporal/audio weights, on S3.
    unet = build_unet(cfg.model)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "_temp" in name or "_audio" in name:
                p.add_(0.02 * torch.randn_like(p))
    unet.save_pretrained(tmp / "export")
    (tmp / "unet.sha256").write_text(state_sha256(unet))
    Storage().upload_dir(tmp / "export", f"{root}/runs/tiny/export")
    _, run_id = start_run(
        mlflow_server.uri,
        "evaluate-test",
        "train-tiny",
        tags={TAG_EXPORT: f"{root}/runs/tiny/export", TAG_CHECKPOINT: f"{root}/runs/tiny/step_00000020"},
        job="train",
    )
    config = tmp / "exp.yaml"
    config.write_text("name: tiny-eval\n")
    return config, overrides, run_id, mlflow_server, tmp


def _run_job(argv, capsys) -> tuple[int, str, str]:
    code = run_guarded(evaluate_job.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_logs_every_metric_to_the_training_run(setup, capsys):
    config, overrides, run_id, mlflow, tmp = setup
    code, out, err = _run_job(["--config", str(config), "--checkpoint", run_id, "--json", *overrides], capsys)
    assert code == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mlflow_run_id"] == run_id and result["parallel"] and result["workers"] == 2
    assert result["num_clips"] == 6 and result["clips_generated"] == 6 and not result["skipped"]
    assert result["checkpoint"]["kind"] == "export" and result["checkpoint"]["step"] == 20
    for key in PAPER_METRICS + SYNC_CONTROLS:
        assert np.isfinite(result["metrics"][key]), key
    m = result["metrics"]
    assert m["Sync_ci_low"] <= m["Sync"] <= m["Sync_ci_high"]
    assert 0 <= m["Sync_win_rate_ci_low"] <= m["Sync_win_rate"] <= m["Sync_win_rate_ci_high"] <= 1
    assert round(m["Sync_win_rate"] * 6) == pytest.approx(m["Sync_win_rate"] * 6)  # a fraction of 6 clips

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.uri)
    run = client.get_run(run_id)
    name = run.data.tags[TAG_EVAL_LATEST]
    assert (
        name
        == result["name"]
        == "step-20_audio_guidance_scale=4_text_guidance_scale=1_num_inference_steps=2_seed=0_exact"
    )
    for key in PAPER_METRICS + SYNC_CONTROLS:
        (point,) = client.get_metric_history(run_id, f"eval/{key}")
        assert point.step == 20 and point.value == pytest.approx(result["metrics"][key])

    folder = f"eval/{name}"
    assert {a.path for a in client.list_artifacts(run_id, folder)} == {
        f"{folder}/eval.json",
        f"{folder}/per_class.json",
        f"{folder}/per_class.csv",
        f"{folder}/sync_curves.png",
    }
    with open(client.download_artifacts(run_id, f"{folder}/sync_curves.png"), "rb") as png:
        header = png.read(24)  # signature, then the IHDR chunk: width and height
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    size = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert size == (800, 400)  # 4 of the 6 clips, 2 across
    table = json.loads(open(client.download_artifacts(run_id, f"{folder}/per_class.json")).read())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    record = json.loads(open(client.download_artifacts(run_id, f"{folder}/eval.json")).read())
    classes = sorted({c["class_dir"] for c in record["clips"]})
    assert [r["class"] for r in rows] == classes and len(classes) == 2 and all(r["clips"] == 3 for r in rows)
    assert all(np.isfinite(r[k]) for r in rows for k in PAPER_METRICS + ("Sync_shifted", "Sync_win_rate"))

    # every number names what produced it: each network's sha256 (the metric networks' files, the UNet as
    # loaded), the scored videos, the protocol and the code, in the record and as the run's params
    cfg = load_experiment(None, overrides)
    prov = record["provenance"]
    m = cfg.eval.metrics
    assert prov["net.inception"] == file_sha256(m.inception_weights)
    assert prov["net.i3d"] == file_sha256(m.i3d_weights)
    assert prov["net.imagebind"] == file_sha256(m.imagebind_weights)
    assert prov["net.avsync"] == file_sha256(m.avsync_classifier)
    assert prov["net.unet"] == (tmp / "unet.sha256").read_text()
    assert prov["text_encodings"] == file_sha256(cfg.model.text_encodings)
    assert prov["videos"] == names_sha256(sorted({c["video"] for c in record["clips"]}))
    assert prov["protocol"] == "exact" and prov["code"] == code_version()
    assert {"net.vae", "net.audio_encoder", "net.imagebind_bpe"} <= set(prov)
    params = client.get_run(run_id).data.params
    assert all(params[f"provenance.{k}"] == v for k, v in prov.items())

    # What was scored is what was written: mp4 on the S3 server, 12 frames at 6 fps, 2 s of 16 kHz audio.
    clip = record["clips"][0]
    assert clip["video_uri"].startswith("s3://") and clip["gt_uri"].startswith("s3://")
    with av.open(io.BytesIO(Storage().read_bytes(clip["video_uri"]))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert (
            c.streams.video[0].codec_context.name == "h264" and float(c.streams.video[0].average_rate) == 6.0
        )
    with av.open(io.BytesIO(Storage().read_bytes(clip["video_uri"]))) as c:
        audio = [f for f in c.decode(audio=0)]
        assert c.streams.audio[0].codec_context.name == "aac" and c.streams.audio[0].rate == 16000
    assert np.stack(frames).shape == (12, 64, 64, 3)
    assert abs(sum(f.samples for f in audio) / 16000 - 2.0) < 0.07


def test_bad_input_fails_before_ray_with_one_line_and_no_run(setup, capsys, tmp_path):
    config, overrides, _, mlflow, _ = setup
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.uri)
    exp = client.get_experiment_by_name("evaluate-test")
    before = len(client.search_runs([exp.experiment_id]))
    code, _, err = _run_job(
        ["--config", str(config), "--checkpoint", "init", *overrides, f"dataset.root={tmp_path}/missing"],
        capsys,
    )
    assert code == 2 and err.strip().splitlines() == [
        f"error: dataset.root {tmp_path}/missing: directory not found"
    ]
    code, _, err = _run_job(
        ["--config", str(config), "--checkpoint", f"{tmp_path}/no-checkpoint", *overrides], capsys
    )
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert len(client.search_runs([exp.experiment_id])) == before
