"""`jobs.generate`: image + audio file -> mp4 with that audio, single (in process) and batch (Ray actors,
outputs local and on the S3 server)."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from asva_platform.dev.fixtures import tiny_eval_overrides
from asva_platform.errors import run_guarded
from asva_platform.experiment import load_experiment
from asva_platform.generation.job import load_audio_window
from asva_platform.storage import Storage
from jobs import generate as generate_job

pytestmark = pytest.mark.integration
SR_IN = 44100


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generate")
    # 64x64, 2 PNDM steps; audio guidance 1 = one UNet pass per step (the CFG path is covered by test_evaluate)
    overrides = tiny_eval_overrides(tmp_path_factory.getbasetemp() / "eval_inputs") + [
        "generate.audio_guidance_scale=1"
    ]
    yy, xx = np.mgrid[0:90, 0:120]
    rgb = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    rgb[30:60, 40:70] = (250, 220, 40)
    Image.fromarray(rgb).save(tmp / "first.png")
    rng = np.random.default_rng(0)
    t = np.arange(int(3.0 * SR_IN)) / SR_IN
    wave = 0.01 * rng.normal(size=t.size)
    for onset in (0.3, 0.9, 1.6, 2.2):  # decaying tone bursts: clearly structured audio
        on = t >= onset
        wave[on] += 0.5 * np.exp(-(t[on] - onset) * 12) * np.sin(2 * np.pi * 440 * (t[on] - onset))
    sf.write(
        tmp / "sound.wav", np.stack([wave, 0.5 * wave], axis=1).astype(np.float32), SR_IN
    )  # stereo 44.1 kHz
    config = tmp / "exp.yaml"
    config.write_text("name: tiny-generate\n")
    return tmp, config, overrides


def _decode(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        fps, vcodec = float(v.average_rate), v.codec_context.name
    with av.open(io.BytesIO(data)) as c:
        a = c.streams.audio[0]
        audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
        rate, acodec = a.rate, a.codec_context.name
    return frames, fps, vcodec, audio, rate, acodec


def _check_mp4(data: bytes, expected_audio: np.ndarray) -> None:
    frames, fps, vcodec, audio, rate, acodec = _decode(data)
    assert frames.shape == (12, 64, 64, 3) and fps == 6.0 and vcodec == "h264"
    assert rate == 16000 and acodec == "aac" and abs(audio.size / rate - 2.0) < 0.07
    # The track is the requested 2 s window of the input (AAC adds a small delay: search a few ms).
    n = expected_audio.size
    best = max(
        np.corrcoef(audio[lag : lag + n - 2000], expected_audio[: n - 2000])[0, 1]
        for lag in range(0, 1200, 16)
    )
    assert best > 0.9


def test_single_image_and_audio_to_mp4(inputs, capsys):
    tmp, config, overrides = inputs
    out = tmp / "single" / "out.mp4"
    code = run_guarded(
        generate_job.main,
        [
            "--config",
            str(config),
            "--checkpoint",
            "init",
            "--image",
            str(tmp / "first.png"),
            "--audio",
            str(tmp / "sound.wav"),
            "--prompt",
            "dog_barking",
            "--audio-start",
            "0.5",
            "--out",
            str(out),
            "--json",
            *overrides,
            "eval.parallel=false",
        ],
    )
    stdout, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    (item,) = result["outputs"]
    assert item["prompt"] == "dog barking" and item["frames"] == 12 and result["workers"] == 1
    sampling = load_experiment(None, overrides).sampling
    _check_mp4(out.read_bytes(), load_audio_window(tmp / "sound.wav", sampling, 0.5))


def test_batch_list_runs_on_ray_actors(inputs, s3_server, ray_cluster, capsys):
    tmp, config, overrides = inputs
    s3_out = f"s3://{s3_server.bucket}/generate-test/{tmp.name}/b.mp4"
    (tmp / "list.csv").write_text(
        "image,audio,prompt,out,audio_start\n"
        f"first.png,sound.wav,lions roaring,batch/a.mp4,0\n"
        f"first.png,sound.wav,dog_barking,{s3_out},1.0\n"
    )
    code = run_guarded(
        generate_job.main,
        [
            "--config",
            str(config),
            "--batch",
            str(tmp / "list.csv"),
            "--json",
            *overrides,
            "eval.num_workers=2",
        ],
    )
    stdout, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["parallel"] and result["workers"] == 2
    assert [o["out"] for o in result["outputs"]] == [str(tmp / "batch" / "a.mp4"), s3_out]
    sampling = load_experiment(None, overrides).sampling
    _check_mp4((tmp / "batch" / "a.mp4").read_bytes(), load_audio_window(tmp / "sound.wav", sampling, 0.0))
    _check_mp4(Storage().read_bytes(s3_out), load_audio_window(tmp / "sound.wav", sampling, 1.0))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--image": "missing.png"}, "image {tmp}/missing.png: not found"),
        ({"--prompt": "whale singing"}, "prompt 'whale singing' has no text encoding"),
        ({"--out": "out.gif"}, "must end in .mp4"),
    ],
)
def test_bad_items_fail_before_any_model_loads(inputs, capsys, change, message):
    tmp, config, overrides = inputs
    args = {
        "--image": "first.png",
        "--audio": "sound.wav",
        "--prompt": "dog_barking",
        "--out": "x.mp4",
        **change,
    }
    argv = ["--config", str(config)]
    for k, v in args.items():
        argv += [k, v if k == "--prompt" else str(tmp / v)]
    code = run_guarded(generate_job.main, [*argv, *overrides, "eval.parallel=false"])
    _, err = capsys.readouterr()
    assert code == 2 and message.format(tmp=tmp) in err and len(err.strip().splitlines()) == 1
