"""``asva compare RUN [RUN ...]``: one self-contained HTML page comparing evaluated runs side by side.

For every evaluation clip the runs share: the ground truth and each run's generated video, with their
audio, in one row; above them a table of the runs' settings, the params that differ between them and
their metrics with their 95 % intervals (best value per metric marked). Each video column's heading
states its run's headline metric with its interval. "Play all" starts every video from the start on one
clock (the first video's; the others are pulled back to it when they drift), so rows stay in step; "play
row" does the same for one row. Under each clip a strip of its sync curves (:mod:`asva_platform.sync_curves`):
the audio's onset envelope as a grey area and each column's motion energy as a line in the colour of the
column's heading, on one time axis, so the eye sees whether motion lands on the sounds. MLflow's UI has no
cross-run video view (mlflow#23204).

Runs: the given run ids; a single run that has child runs (a sweep's parent run) means its children.
Each run needs an evaluation logged by ``jobs.evaluate`` (or ``log_evaluation``): the page reads its
``eval/<name>/eval.json`` record and the clips' mp4 files from storage.

The page is logged as ``compare/index.html`` to the parent run (when comparing a sweep's children), to
``--log-to RUN``, or to a new run (job ``compare``) tagged with the compared run ids. Videos are embedded as
``data:`` URIs because MLflow 3.17's artifact viewer renders an HTML artifact from a blob URL in a
sandboxed iframe: relative links to files logged beside it cannot resolve there, data URIs play. That
makes pages large (about 4/3 of the mp4 bytes), so ``--max-clips`` caps the clips shown.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asva_model.metrics import catalogue
from asva_model.metrics.catalogue import Metric
from asva_platform.artifacts.evaluation import EvaluationRecord, load_evaluation
from asva_platform.artifacts.provenance import incomparable
from asva_platform.errors import UserError, run_guarded
from asva_platform.experiment import PROTOCOLS, SEED_KEY, load_experiment
from asva_platform.inference.config import GenerateConfig
from asva_platform.storage import Storage
from asva_platform.sync_curves import clip_curves, column_colour, evenly_spread, sampling_of, svg
from asva_platform.tracking import (
    TAG_COMPARED,
    TAG_EVAL_LATEST,
    TAG_PARENT,
    check_tracking_server,
    run_status,
    start_run,
    ui_url,
)

ARTIFACT_PATH = "compare/index.html"
JOB = "compare"
SETTING_KEYS = ("audio_guidance_scale", "text_guidance_scale", "num_inference_steps", "seed")
"""The generation settings the runs table shows (``generate.*``)."""
SEED_FIELD = SEED_KEY.rsplit(".", 1)[1]
MAX_DIFF_PARAMS = 12
PAGE_WARN_BYTES = 64 * 2**20


@dataclass
class ComparedRun:
    run_id: str
    name: str
    experiment_id: str
    params: dict[str, str]
    record: EvaluationRecord
    """The run's evaluation (eval.json)."""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.run_id[:8]})"


@dataclass
class Comparison:
    runs: list[ComparedRun]
    parent_run_id: str = ""
    """The sweep parent whose children these are ('' when runs were named directly)."""
    skipped_runs: list[str] | None = None
    """Child runs left out because they have no evaluation."""


def _run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise UserError(f"MLflow run {run_id}: not found ({str(err).splitlines()[0][:160]})") from None


def collect_runs(client, run_ids: list[str]) -> Comparison:
    """The runs to compare (a single run with children -> its children) with their evaluation records."""
    if not run_ids:
        raise UserError("name at least one run (or a sweep's parent run)")
    parent, skipped = "", []
    runs = [_run(client, r) for r in run_ids]
    if len(runs) == 1:
        children = client.search_runs(
            [runs[0].info.experiment_id],
            filter_string=f"tags.`{TAG_PARENT}` = '{runs[0].info.run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
        if children:
            parent = runs[0].info.run_id
            skipped = [c.info.run_id for c in children if TAG_EVAL_LATEST not in c.data.tags]
            runs = [c for c in children if TAG_EVAL_LATEST in c.data.tags]
            if not runs:
                raise UserError(f"run {parent}: none of its {len(children)} child runs has an evaluation")
    compared = [
        ComparedRun(
            r.info.run_id,
            r.info.run_name or r.info.run_id[:8],
            r.info.experiment_id,
            dict(r.data.params),
            load_evaluation(client, r.info.run_id),
        )
        for r in runs
    ]
    return Comparison(by_setting(compared) if parent else compared, parent, skipped)


def by_setting(runs: list[ComparedRun]) -> list[ComparedRun]:
    """A sweep's children in the order of the generation settings that differ between them (as their records
    hold them: numbers as numbers), the seed last, so a setting's seeds sit side by side: trials finish, and so
    start, in any order. Children that differ in something else (a train sweep) keep their run names' order."""
    keys = [f.name for f in dataclasses.fields(GenerateConfig) if f.name != SEED_FIELD] + [SEED_FIELD]
    differing = [k for k in keys if len({getattr(r.record.generate, k) for r in runs}) > 1]
    return sorted(runs, key=lambda r: ([getattr(r.record.generate, k) for k in differing], r.name))


@dataclass
class SharedClip:
    """A clip every compared run evaluated: its ground truth and each run's video."""

    name: str
    start: float
    gt_uri: str
    videos: list[str]
    """One per run, in the runs' order."""


def shared_clips(runs: list[ComparedRun], max_clips: int) -> tuple[list[SharedClip], int]:
    """Clips every run evaluated, in the first run's order, at most ``max_clips`` (0 = all), spread evenly;
    returns (the shared clips, how many there are in all)."""
    by_run = [{c.name: c for c in r.record.clips} for r in runs]
    names = [c.name for c in runs[0].record.clips if all(c.name in m for m in by_run)]
    total = len(names)
    names = evenly_spread(names, max_clips)
    rows = []
    for name in names:
        first = by_run[0][name]
        gt = next((m[name].gt_uri for m in by_run if m[name].gt_uri), "")
        rows.append(SharedClip(first.name, first.start, gt, [m[name].video_uri for m in by_run]))
    return rows, total


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:20px;margin:0 0 8px}
p.note{color:#555;font-size:13px;margin:4px 0 12px}
p.warning{color:#a00;font-weight:bold;font-size:14px;margin:4px 0 12px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:bold;background:#e6f4e6}
.clips th{position:sticky;top:0;z-index:1}
.clips video{width:192px;display:block;background:#000}
.clips td.name{min-width:150px;max-width:220px;word-break:break-all;font-size:12px}
button{font-size:12px;margin-top:4px}
#play-all{font-size:14px;font-weight:bold}
span.metric{font-weight:normal;font-size:12px;color:#333}
span.note{color:#555;font-size:13px}
span.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.clips tr.curves td{border-top:none;padding-top:0}
.clips tr.curves td.name{color:#555}
"""

# One clock: the first video of a group leads (its audio is the one heard); every frame the others are pulled
# back to its time when they drift by more than DRIFT seconds, so loops and stalls cannot put rows out of step.
_JS = """
const DRIFT=0.05;let clock=null;
function playGroup(vids){
  if(clock)cancelAnimationFrame(clock);
  document.querySelectorAll('video').forEach(v=>v.pause());
  vids.forEach((v,i)=>{v.currentTime=0;v.muted=i>0;});
  const lead=vids[0];
  const follow=()=>{vids.forEach(v=>{if(v!==lead&&Math.abs(v.currentTime-lead.currentTime)>DRIFT)v.currentTime=lead.currentTime;});
    clock=requestAnimationFrame(follow);};
  Promise.all(vids.map(v=>v.play().catch(()=>{}))).then(()=>{clock=requestAnimationFrame(follow);});
}
function playAll(){playGroup([...document.querySelectorAll('table.clips video')]);}
function playRow(btn){playGroup([...btn.closest('tr').querySelectorAll('video')]);}
function stopAll(){if(clock)cancelAnimationFrame(clock);clock=null;document.querySelectorAll('video').forEach(v=>v.pause());}
"""


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _swatch(column: int) -> str:
    """The column's colour, as its sync curves are drawn."""
    return f'<span class="swatch" style="background:{column_colour(column)}"></span>'


def _video_tag(data: bytes | None, title: str) -> str:
    if data is None:
        return '<td class="missing">missing</td>'
    src = "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<td><video controls loop preload="metadata" title="{html.escape(title)}" src="{src}"></video></td>'
    )


def with_interval(metrics: dict, name: str) -> str:
    """``0.412 [0.38, 0.44]``: a metric with its 95 % interval where the record has one."""
    value, bounds = metrics.get(name), catalogue.interval(metrics, name)
    if value is None:
        return "–"
    return _fmt(value) + (f" [{_fmt(bounds[0])}, {_fmt(bounds[1])}]" if bounds else "")


def ranked_metrics(runs: list[ComparedRun], every: bool) -> list[Metric]:
    """The metrics with a better direction that every run (``every``) or any run reports, in display order."""
    reported = [set(r.record.metrics) for r in runs]
    names = set.intersection(*reported) if every else set.union(*reported)
    return catalogue.ranked(names)


def headline_metric(runs: list[ComparedRun]) -> str:
    """The metric each video column states: the first ranked metric every run reports, preferring Sync, the one
    that says whether motion follows the audio."""
    reported = [m.name for m in ranked_metrics(runs, every=True)]
    return "Sync" if "Sync" in reported else (reported[0] if reported else "")


def header_table(runs: list[ComparedRun]) -> str:
    metrics = ranked_metrics(runs, every=False)
    shown = {f"generate.{k}" for k in SETTING_KEYS}
    keys = sorted({k for r in runs for k in r.params})
    differing = [k for k in keys if k not in shown and len({r.params.get(k) for r in runs}) > 1][
        :MAX_DIFF_PARAMS
    ]
    best = {}
    for m in metrics:
        present = [v for v in (r.record.metrics.get(m.name) for r in runs) if v is not None]
        if len(present) > 1:
            best[m.name] = (min if m.direction == "lower" else max)(present)
    head = [
        "run",
        "checkpoint",
        "audio guidance",
        "text guidance",
        "steps",
        "seed",
        "clips",
        *differing,
        *[f"{m.name} {'↓' if m.direction == 'lower' else '↑'}" for m in metrics],
    ]
    rows = []
    for r in runs:
        cells = [f"<td>{html.escape(r.label)}</td>", f"<td>{html.escape(r.record.checkpoint.label)}</td>"]
        cells += [f'<td class="num">{_fmt(getattr(r.record.generate, k))}</td>' for k in SETTING_KEYS]
        cells.append(f'<td class="num">{len(r.record.clips)}</td>')
        cells += [f"<td>{html.escape(str(r.params.get(k, '–')))}</td>" for k in differing]
        for m in metrics:
            v = r.record.metrics.get(m.name)
            cls = "num best" if m.name in best and v == best[m.name] else "num"
            cells.append(f'<td class="{cls}">{with_interval(r.record.metrics, m.name)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table class="runs"><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def protocol_warning(runs: list[ComparedRun]) -> str:
    """A warning when the runs' evaluations followed different protocols (their numbers do not compare), with
    the quirks that differ; '' when they agree. Records older than the protocol switch count as `exact`."""
    protocols = {r.label: r.record.protocol for r in runs}
    quirks = [r.record.quirks or PROTOCOLS["exact"] for r in runs]
    differing = sorted({k for q in quirks for k in q if len({str(other.get(k)) for other in quirks}) > 1})
    if len(set(protocols.values())) < 2 and not differing:
        return ""
    which = ", ".join(f"{label}: {p}" for label, p in protocols.items())
    detail = f"; differing: {', '.join(differing)}" if differing else ""
    return (
        f"Warning: these evaluations followed different protocols ({which}{detail}), so their metrics are "
        'not comparable: docs/metrics.md, "Reproducing the paper".'
    )


def provenance_warnings(runs: list[ComparedRun]) -> list[str]:
    """Each run whose metrics cannot be set beside the first run's, which metrics and what differs (the
    network hashes, the scored videos, the protocol of their evaluation records)."""
    first = runs[0]
    return [
        f"{r.label} vs {first.label}: {line}"
        for r in runs[1:]
        for line in incomparable(
            first.record.provenance,
            r.record.provenance,
            [m for m in first.record.metric_families if m in r.record.metric_families],
        )
    ]


def provenance_table(runs: list[ComparedRun]) -> str:
    """What produced each run's numbers: the first 12 hex of every hash in its evaluation record."""
    keys = sorted({k for r in runs for k in r.record.provenance})
    if not keys:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    rows = "".join(
        f"<tr><td>{html.escape(r.label)}</td>"
        + "".join(
            f'<td class="num" title="{html.escape(r.record.provenance.get(k, ""))}">'
            f"{html.escape(_short_hash(k, r.record.provenance.get(k, '–')))}</td>"
            for k in keys
        )
        + "</tr>"
        for r in runs
    )
    return (
        "<details><summary>what produced these numbers (sha256 of networks, scored videos, text encodings; "
        f'protocol; code)</summary><table class="provenance"><tr><th>run</th>{head}</tr>{rows}</table></details>'
    )


def _short_hash(key: str, value: str) -> str:
    return value if key in ("protocol", "code") else value[:12]


def render_page(comparison: Comparison, storage: Storage, max_clips: int = 24) -> tuple[str, int]:
    """The page's HTML and the number of clips shown."""
    runs = comparison.runs
    clips, total = shared_clips(runs, max_clips)

    def read(uri: str) -> bytes | None:
        return storage.read_bytes(uri) if uri and storage.exists(uri) else None

    metric = headline_metric(runs)
    heading = "".join(
        f"<th>{_swatch(i)}{html.escape(r.label)}"
        + (
            f'<br><span class="metric">{metric} {with_interval(r.record.metrics, metric)}</span>'
            if metric
            else ""
        )
        + "</th>"
        for i, r in enumerate(runs, start=1)
    )
    labels = ["ground truth"] + [r.label for r in runs]
    sampling = sampling_of(runs[0].record)  # runs compared side by side cut their clips alike
    rows = []
    for clip in clips:
        where = f"{clip.name} (start {clip.start:.2f} s)"
        videos = [read(clip.gt_uri)] + [read(uri) for uri in clip.videos]
        cells = [
            f'<td class="name">{html.escape(where)}<br><button onclick="playRow(this)">play row</button></td>'
        ]
        cells += [_video_tag(data, f"{label}: {clip.name}") for data, label in zip(videos, labels)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
        strip = svg(clip_curves(videos, sampling), labels)
        if strip:
            rows.append(
                f'<tr class="curves"><td class="name">sound onsets (grey), motion (lines)</td>'
                f'<td colspan="{len(videos)}">{strip}</td></tr>'
            )
    source = (
        f"children of run {comparison.parent_run_id}" if comparison.parent_run_id else f"{len(runs)} run(s)"
    )
    notes = [
        f"{source}; {len(clips)} of {total} shared clip(s) shown (first frame = ground-truth condition; "
        "every generated clip carries its window's ground-truth audio). Metrics: mean over the run's clips "
        "with its 95% interval in brackets, where the evaluation reports one. Under each clip: the audio's "
        "onset envelope (grey area) and each column's motion energy (a line in the colour of its heading), "
        "each scaled to its own maximum, on one time axis: in a synced clip the lines peak where the grey "
        "peaks (what the Sync metric correlates)."
    ]
    if comparison.skipped_runs:
        notes.append(f"Left out (no evaluation): {', '.join(comparison.skipped_runs)}.")
    warnings = [w for w in (protocol_warning(runs), *provenance_warnings(runs)) if w]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ASVA comparison</title>"
        f"<style>{_CSS}</style><script>{_JS}</script></head><body>"
        f"<h1>ASVA comparison: {len(runs)} run(s)</h1>"
        + "".join(f'<p class="warning">{html.escape(w)}</p>' for w in warnings)
        + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
        + header_table(runs)
        + provenance_table(runs)
        + '<h2 style="font-size:16px">Clips</h2><p><button id="play-all" onclick="playAll()">play all</button> '
        '<button onclick="stopAll()">stop</button> <span class="note">every row from the start, in step; the '
        'first video\'s audio is heard</span></p><table class="clips"><tr><th>clip</th>'
        + f"<th>{_swatch(0)}ground truth</th>"
        + heading
        + "</tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return page, len(clips)


# ---------------------------------------------------------------------------------------------
# Logging and CLI


def log_page(client, page: str, comparison: Comparison, log_to: str = "", experiment: str = "") -> str:
    """Log the page as ``compare/index.html``; returns the run it went to."""
    run_id = log_to or comparison.parent_run_id
    if not run_id:
        name = experiment or client.get_experiment(comparison.runs[0].experiment_id).name
        ids = ",".join(r.run_id for r in comparison.runs)
        _, run_id = start_run(
            client.tracking_uri,
            name,
            f"compare-{len(comparison.runs)}-runs",
            tags={TAG_COMPARED: ids[:5000]},
            job=JOB,
        )
        own_run = True
    else:
        own_run = False
    with (
        run_status(client, run_id, close=own_run),
        tempfile.TemporaryDirectory(prefix="asva-compare-") as tmp,
    ):
        path = Path(tmp) / "index.html"
        path.write_text(page, encoding="utf-8")
        client.log_artifact(run_id, str(path), "compare")
    return run_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="asva compare", description=__doc__.splitlines()[0])
    p.add_argument(
        "runs", nargs="+", help="MLflow run ids; one run with child runs (a sweep's parent) = its children"
    )
    p.add_argument(
        "--config", default=None, help="experiment YAML for tracking URI and storage (default: env)"
    )
    p.add_argument(
        "--max-clips", type=int, default=24, help="clips shown, spread evenly (0 = all; default 24)"
    )
    p.add_argument("--out", default=None, help="also write the page to this local file")
    p.add_argument(
        "--log-to", default="", help="log the page to this run (default: the parent run, else a new run)"
    )
    p.add_argument(
        "--experiment", default="", help="experiment of a new comparison run (default: the first run's)"
    )
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow (needs --out)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """Build (and log) the page; returns the result ``main`` prints with ``--json``, including
    ``mlflow_url``: the page in the MLflow UI's artifact view ('' when not logged or not on a server)."""
    args = parse_args(argv)
    from mlflow.tracking import MlflowClient

    if args.no_log and not args.out:
        raise UserError("--no-log needs --out (otherwise the page goes nowhere)")
    if args.max_clips < 0:
        raise UserError(f"--max-clips must be >= 0, got {args.max_clips}")
    cfg = load_experiment(args.config)
    uri = cfg.tracking.resolved_uri()
    check_tracking_server(uri)
    client = MlflowClient(tracking_uri=uri)
    comparison = collect_runs(client, args.runs)
    for line in provenance_warnings(comparison.runs):
        print(f"warning: {line}", file=sys.stderr)
    page, shown = render_page(comparison, Storage.from_config(cfg.storage), args.max_clips)
    size = len(page.encode("utf-8"))
    if size > PAGE_WARN_BYTES:
        print(
            f"warning: the page is {size / 2**20:.0f} MiB; lower --max-clips if browsers struggle",
            file=sys.stderr,
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(page, encoding="utf-8")
    run_id = "" if args.no_log else log_page(client, page, comparison, args.log_to, args.experiment)
    url = ui_url(uri, client.get_run(run_id).info.experiment_id, run_id, ARTIFACT_PATH) if run_id else ""
    where = f"run {run_id} artifact {ARTIFACT_PATH}" if run_id else args.out
    print(
        f"compare: {len(comparison.runs)} run(s), {shown} clip(s), {size / 2**20:.1f} MiB -> {where}"
        + (f"; in MLflow: {url}" if url else ""),
        flush=True,
    )
    return {
        "run_id": run_id,
        "artifact": ARTIFACT_PATH if run_id else "",
        "out": args.out or "",
        "runs": [r.run_id for r in comparison.runs],
        "parent_run_id": comparison.parent_run_id,
        "clips": shown,
        "bytes": size,
        "mlflow_url": url,
    }


def main(argv: list[str] | None = None) -> int:
    """``asva compare``; known problems raise UserError/StorageError."""
    result = run(argv)
    if parse_args(argv).json:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
