"""The sync-curve picture an evaluation logs: a PNG of a few clips' audio onsets and motion, of a size fixed by
its number of clips, logged beside the evaluation's record (the page's SVG strip: test_compare_page.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
from mlflow.tracking import MlflowClient

from asva_model.metrics.sync import Curve
from asva_platform.evaluation.job import log_sync_plot
from asva_platform.storage import Storage
from asva_platform.sync_curves import ClipCurves, draw_png, png_size
from tests.records import clip, evaluation_record
from tests.unit.test_compare_page import _flash_clip

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image(path):
    import matplotlib.pyplot as plt

    assert open(path, "rb").read(8) == PNG_MAGIC
    return plt.imread(path)  # decodes the whole file: a truncated or corrupt PNG raises


def _curves(onset_at: float, motion_at: list[float]) -> ClipCurves:
    t = np.arange(201) * 0.01
    mid = (np.arange(11) + 0.5) / 6
    return ClipCurves(
        2.0,
        Curve(t, np.exp(-(((t - onset_at) / 0.02) ** 2))),
        [Curve(mid, np.exp(-(((mid - m) / 0.2) ** 2))) for m in motion_at],
    )


def test_the_png_has_a_panel_per_clip_two_across_at_a_fixed_size(tmp_path):
    panels = [(f"dog/v{i}_clip-00", _curves(0.4 + 0.3 * i, [0.4 + 0.3 * i, 1.5])) for i in range(3)]
    image = _image(draw_png(panels, ["ground truth", "generated"], tmp_path / "three.png"))
    assert image.shape[:2] == (400, 800) and png_size(3) == (800, 400)  # 2 rows of 2 panels, one left blank
    assert image[..., :3].std() > 0.05  # something is drawn
    one = _image(draw_png(panels[:1], ["ground truth", "generated"], tmp_path / "one.png"))
    assert one.shape[:2] == (200, 400)
    # a clip whose videos could not be read still gets its (empty) panel
    empty = draw_png(
        [("gone", ClipCurves(2.0, None, [None, None]))], ["ground truth", "generated"], tmp_path / "e.png"
    )
    assert _image(empty).shape[:2] == (200, 400)


def test_the_evaluation_logs_its_sync_plot_beside_its_record(tmp_path):
    """Four of its five clips, spread evenly; a clip without its ground truth (eval.save_gt_videos off) is
    drawn with the generated motion alone."""
    gt = _flash_clip(tmp_path / "gt.mp4", [0.42, 1.25])
    generated = _flash_clip(tmp_path / "gen.mp4", [0.92, 1.6])
    clips = [
        dataclasses.replace(clip(f"dog/v{i}_clip-00"), video_uri=generated, gt_uri=gt if i else "")
        for i in range(5)
    ]
    record = evaluation_record({"Sync": 0.1}, clips)
    record.sampling = {"image_size": [64, 64]}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("eval", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id

    path = log_sync_plot(client, run_id, record, Storage())
    assert path == "eval/eval/sync_curves.png"
    assert [a.path for a in client.list_artifacts(run_id, "eval/eval")] == [path]
    image = _image(client.download_artifacts(run_id, path, str(tmp_path / "down")))
    assert image.shape[:2] == (400, 800)
    assert log_sync_plot(client, run_id, evaluation_record(clips=[]), Storage()) == ""  # nothing to draw
