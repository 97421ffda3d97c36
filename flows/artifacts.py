"""What a run shows in the Prefect UI: a summary, the inputs that failed, a link to the report.

The contents are plain functions of a run's report and its OUT folder
(:func:`mine_summary_markdown`, :func:`failed_inputs_table`, :func:`metrics_table`),
testable without a server; the ``publish_*`` functions hand them to Prefect. Publishing
is best effort: a server that refuses an artifact costs a warning, never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runs.folder import RunFolder

log = logging.getLogger(__name__)

MINE_SUMMARY = "capmine-mine-summary"
FAILED_INPUTS = "capmine-failed-inputs"
REPORT_LINK = "capmine-report"
TRAIN_METRICS = "capmine-train-metrics"
EVAL_METRICS = "capmine-eval-metrics"
MINE_AND_TRAIN = "capmine-mine-and-train-summary"

FAILED_COLUMNS = ("input", "stage", "kind", "error")
MAX_FAILED_ROWS = 1000  # the artifact stays small; the parquet files hold every row


# ---------------------------------------------------------------- contents


def _cell(value: Any) -> str:
    """A value for a markdown table cell: pipes escaped, one line."""
    return " ".join(str(value).replace("|", "\\|").split())


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _counts(report: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(stage, count) rows: seeds, videos, frames, matches, clips by status, shards."""
    s, v, c = report["seeds"], report["videos"], report["clips"]
    reused = ", reused" if s.get("reused") else ""
    return [
        ("seeds embedded", f"{s['n_ok']} of {s['n_seeds']} ({s['n_failed']} failed{reused})"),
        ("videos scanned", f"{v['ok']} of {v['total']} ({v['failed']} failed)"),
        ("videos skipped (finished by earlier runs)", report.get("skipped_videos", 0)),
        ("frames sampled", v["frames"]),
        ("matches", v["matches"]),
        ("clips planned", c["planned"]),
        ("clips kept", c["ok"]),
        ("clips dropped by filters", c["dropped"]),
        ("clips failed", c["failed"]),
        ("shards written", report["shards"]),
    ]


def _threshold_lines(threshold: Mapping[str, Any] | None) -> list[str]:
    if not threshold:
        return ["No threshold: nothing was scanned."]
    lines = [f"**{threshold['threshold']}**, {threshold['basis']}."]
    if "false_match_rate" in threshold:
        lines.append(f"False-match rate {threshold['false_match_rate']:g}.")
    nulls = threshold.get("nulls") or {}
    if nulls:
        rows = [(name, q.get("n"), _num(q.get("q0.5")), _num(q.get("q0.99")), _num(q.get("max")),
                 _num(q.get("at_rate"))) for name, q in nulls.items()]  # fmt: skip
        lines += [""] + _table(("null sample", "n", "median", "q0.99", "max", "at rate"), rows)
    return lines


def _num(x: Any) -> Any:
    return f"{x:.4f}" if isinstance(x, float) else ("" if x is None else x)


def mine_summary_markdown(report: Mapping[str, Any], out: str | Path) -> str:
    """The run in markdown: counts per stage, drops per reason, the threshold and its
    basis, seconds per stage (and the scans' own time by step, summed over videos)."""
    dropped = report.get("filters", {}).get("dropped", {})
    examples = report.get("filters", {}).get("examples", {})
    drops = [(r, n, ", ".join(examples.get(r, []))) for r, n in sorted(dropped.items())]
    seconds = [(k, f"{v:.1f}") for k, v in report.get("seconds", {}).items()]
    per_video = [(f"scan: {k}", f"{v:.1f}") for k, v in report.get("video_seconds", {}).items()]
    lines = [f"# capmine run {report.get('run', '?')}: {out}", ""]
    lines += _table(("stage", "count"), _counts(report)) + ["", "## Drops by reason", ""]
    if drops:
        lines += _table(("reason", "clips", "examples"), drops)
    else:
        lines.append(f"None (filters: {report.get('filters', {}).get('chain', '?')}).")
    lines += ["", "## Threshold", ""] + _threshold_lines(report.get("threshold"))
    lines += ["", "## Seconds per stage", ""] + _table(("stage", "seconds"), seconds + per_video)
    return "\n".join(lines) + "\n"


def failed_inputs(out: str | Path) -> list[dict[str, str]]:
    """The failed rows of ``OUT/seeds.parquet`` and ``OUT/videos.parquet``: input, stage
    (seed or video), kind and error, named and kinded as the run report names them
    (:func:`runs.reportdata.failed_inputs_of`)."""
    from runs.reportdata import failed_inputs_of  # lazy: pandas, only when publishing

    return [{"input": r["name"], "stage": r["input"], "kind": r["kind"], "error": r["error"]}
            for r in failed_inputs_of(out)]  # fmt: skip


def failed_inputs_table(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    """``rows`` as the columns of a table artifact (columns kept when there are none),
    at most :data:`MAX_FAILED_ROWS` of them."""
    rows = rows[:MAX_FAILED_ROWS]
    return {c: [r[c] for r in rows] for c in FAILED_COLUMNS}


def report_link(out: str | Path) -> str:
    """The run's HTML report as a ``file://`` URL."""
    return RunFolder(out).path("report.html").absolute().as_uri()


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as one level, keys joined by dots (``final.loss``)."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            flat.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (str, int, float, bool)) or v is None:
            flat[f"{prefix}{k}"] = v
    return flat


def metrics_table(metrics: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A training summary or evaluation result as a two-column table: metric, value."""
    flat = flatten(metrics)
    return {
        "metric": list(flat),
        "value": [_num(v) if v is not None else "" for v in flat.values()],
    }


def mine_and_train_markdown(result: Mapping[str, Any]) -> str:
    """Clips mined, the training's end and the evaluation, in one short page."""
    mine, train, ev = result["mine"], result["train"], result["eval"]
    final = train.get("final") or {}
    rows = [("clips mined", mine["clips"]["ok"]), ("shards", mine["shards"]),
            ("training steps", train.get("step")), ("final loss", _num(final.get("loss"))),
            ("samples/s", _num(train.get("samples_per_s")))]  # fmt: skip
    rows += [(f"eval: {k}", _num(v)) for k, v in flatten(ev).items()]
    return "# capmine mine-and-train\n\n" + "\n".join(_table(("", "value"), rows)) + "\n"


# ---------------------------------------------------------------- publishing


def _publish(what: str, make: Callable[[], Any]) -> bool:
    """Create one artifact; a failure is a warning (the run's outputs are in OUT anyway)."""
    try:
        make()
        return True
    except Exception as e:  # a server that refuses an artifact must not fail the run
        log.warning("could not publish the %s artifact: %s: %s", what, type(e).__name__, e)
        return False


def publish_mine(report: Mapping[str, Any], out: str | Path) -> None:
    """The mine flow's artifacts: the summary, the failed inputs, the report's link."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    _publish(MINE_SUMMARY, lambda: create_markdown_artifact(
        mine_summary_markdown(report, out), key=MINE_SUMMARY,
        description=f"capmine run {report.get('run')} in {out}"))  # fmt: skip
    rows: list[dict[str, str]] = []
    _publish("failed inputs", lambda: rows.extend(failed_inputs(out)))
    _publish(FAILED_INPUTS, lambda: create_table_artifact(
        failed_inputs_table(rows), key=FAILED_INPUTS,
        description=f"{len(rows)} failed input(s); every row in {out}/seeds.parquet and "
                    f"{out}/videos.parquet"))  # fmt: skip
    _publish(REPORT_LINK, lambda: create_link_artifact(
        report_link(out), link_text="report.html", key=REPORT_LINK,
        description=f"the run's HTML report in {out}"))  # fmt: skip


def publish_metrics(key: str, metrics: Mapping[str, Any], description: str) -> None:
    """A training summary or evaluation result as a table artifact."""
    from prefect.artifacts import create_table_artifact

    _publish(key, lambda: create_table_artifact(
        metrics_table(metrics), key=key, description=description))  # fmt: skip


def publish_mine_and_train(result: Mapping[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    _publish(MINE_AND_TRAIN, lambda: create_markdown_artifact(
        mine_and_train_markdown(result), key=MINE_AND_TRAIN))  # fmt: skip
