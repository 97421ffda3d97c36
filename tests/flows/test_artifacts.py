"""The contents of the Prefect artifacts, built without a server; publishing that fails
costs a warning, not the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flows import artifacts
from flows.artifacts import (
    failed_inputs,
    failed_inputs_table,
    metrics_table,
    mine_and_train_markdown,
    mine_summary_markdown,
    report_link,
)
from runs.reportdata import error_kind
from shards.writer import write_table

REPORT = {
    "run": 2,
    "threshold": {"threshold": 0.6123, "basis": "calibrated on 14 seeds, 216 frames",
                  "false_match_rate": 0.001,
                  "nulls": {"seed_vs_other_seeds": {"q0.5": 0.1, "q0.99": 0.4, "max": 0.5,
                                                    "n": 91, "at_rate": 0.45}}},
    "seeds": {"n_seeds": 14, "n_ok": 12, "n_failed": 2, "reused": False, "embedder": "x"},
    "videos": {"total": 6, "ok": 5, "failed": 1, "frames": 216, "matches": 40},
    "clips": {"planned": 11, "ok": 7, "failed": 1, "dropped": 3},
    "filters": {"chain": "default", "dropped": {"motion": 2, "duplicate": 1},
                "examples": {"motion": ["k1", "k2"], "duplicate": ["k3"]}},
    "shards": 3,
    "skipped_videos": 4,
    "seconds": {"seeds": 1.25, "scan": 10.5, "shards": 4.0, "total": 15.75},
    "video_seconds": {"fetch": 0.5, "decode": 6.0, "embed": 3.0, "shots": 1.0},
}  # fmt: skip


def _row(md: str, first: str) -> list[str]:
    (line,) = [x for x in md.splitlines() if x.startswith(f"| {first} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_summary_holds_counts_drops_threshold_and_seconds():
    md = mine_summary_markdown(REPORT, "/data/out")
    assert md.startswith("# capmine run 2: /data/out\n")
    assert _row(md, "seeds embedded") == ["seeds embedded", "12 of 14 (2 failed)"]
    assert _row(md, "videos scanned") == ["videos scanned", "5 of 6 (1 failed)"]
    assert _row(md, "videos skipped (finished by earlier runs)")[1] == "4"
    for stage, n in [("frames sampled", 216), ("matches", 40), ("clips planned", 11),
                     ("clips kept", 7), ("clips dropped by filters", 3), ("clips failed", 1),
                     ("shards written", 3)]:  # fmt: skip
        assert _row(md, stage) == [stage, str(n)]
    assert _row(md, "motion") == ["motion", "2", "k1, k2"]
    assert _row(md, "duplicate") == ["duplicate", "1", "k3"]
    assert "**0.6123**, calibrated on 14 seeds, 216 frames." in md
    assert "False-match rate 0.001." in md
    assert _row(md, "seed_vs_other_seeds") == [
        "seed_vs_other_seeds", "91", "0.1000", "0.4000", "0.5000", "0.4500"
    ]  # fmt: skip
    assert _row(md, "scan") == ["scan", "10.5"]
    assert _row(md, "total") == ["total", "15.8"]
    assert _row(md, "scan: decode") == ["scan: decode", "6.0"]


def test_a_run_without_drops_or_threshold_says_so():
    report = dict(REPORT, threshold=None, filters={"chain": "none", "dropped": {}})
    md = mine_summary_markdown(report, "out")
    assert "None (filters: none)." in md
    assert "No threshold: nothing was scanned." in md


def _tables(out: Path, seeds: list[dict], videos: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "seeds.parquet", seeds)
    write_table(out / "videos.parquet", videos)


def test_failed_inputs_are_the_failed_rows_of_both_tables(tmp_path):
    seeds = [
        {"id": "a", "caption": "c", "image": "/s/a.jpg", "status": "ok", "error": None},
        {"id": "b", "caption": "c", "image": "http://h/b.jpg", "status": "failed",
         "error": "HTTP 404: Not Found"},
    ]  # fmt: skip
    videos = [
        {"video": "/v/1.mp4", "status": "failed", "error": "decode: moov atom not found"},
        {"video": "/v/2.mp4", "status": "ok", "error": None},
        {"video": "/v/3.mp4", "status": "failed", "error": None},
    ]
    _tables(tmp_path, seeds, videos)
    rows = failed_inputs(tmp_path)
    assert rows == [
        {"input": "/v/1.mp4", "stage": "video", "kind": "decode", "error": "decode: moov atom not found"},
        {"input": "/v/3.mp4", "stage": "video", "kind": "unknown", "error": ""},
        {"input": "http://h/b.jpg", "stage": "seed", "kind": "HTTP", "error": "HTTP 404: Not Found"},
    ]  # fmt: skip
    # the same kinds the run report's page gives them
    assert [r["kind"] for r in rows] == [error_kind(r["error"]) or "unknown" for r in rows]
    table = failed_inputs_table(rows)
    assert list(table) == ["input", "stage", "kind", "error"]
    assert table["input"] == ["/v/1.mp4", "/v/3.mp4", "http://h/b.jpg"]


def test_no_failures_is_an_empty_table_with_its_columns(tmp_path):
    _tables(tmp_path, [{"image": "a", "status": "ok", "error": None}], [])
    assert failed_inputs(tmp_path) == []
    assert failed_inputs(tmp_path / "missing") == []
    assert failed_inputs_table([]) == {"input": [], "stage": [], "kind": [], "error": []}


def test_a_long_failure_list_is_capped(monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_FAILED_ROWS", 3)
    rows = [{"input": str(i), "stage": "seed", "kind": "k", "error": "e"} for i in range(10)]
    assert failed_inputs_table(rows)["input"] == ["0", "1", "2"]


def test_the_link_is_the_report_page_as_a_file_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report_link("out") == f"file://{tmp_path}/out/report.html"


def test_metrics_are_a_flat_two_column_table():
    summary = {"step": 20, "final": {"loss": 1.23456, "lr": 1e-4}, "samples_per_s": 88.5,
               "device": "cpu", "peak_memory_mb": None, "nested": [1, 2]}  # fmt: skip
    table = metrics_table(summary)
    assert table == {
        "metric": ["step", "final.loss", "final.lr", "samples_per_s", "device", "peak_memory_mb"],
        "value": [20, "1.2346", "0.0001", "88.5000", "cpu", ""],
    }


def test_mine_and_train_summary_holds_mined_trained_and_eval_figures():
    result = {"mine": REPORT, "train": {"step": 20, "final": {"loss": 2.5}, "samples_per_s": 9.0},
              "eval": {"n_clips": 4, "video_text_r1": 0.25}}  # fmt: skip
    md = mine_and_train_markdown(result)
    assert _row(md, "clips mined") == ["clips mined", "7"]
    assert _row(md, "training steps") == ["training steps", "20"]
    assert _row(md, "final loss") == ["final loss", "2.5000"]
    assert _row(md, "eval: video_text_r1") == ["eval: video_text_r1", "0.2500"]


def test_a_refused_artifact_is_a_warning_and_the_others_still_go(tmp_path, monkeypatch, caplog):
    import prefect.artifacts as pa

    made = []

    def refuse(*a, **k):
        raise RuntimeError("server said no")

    monkeypatch.setattr(pa, "create_markdown_artifact", refuse)
    monkeypatch.setattr(pa, "create_table_artifact", lambda table, key, **k: made.append(key))
    monkeypatch.setattr(pa, "create_link_artifact", lambda link, key, **k: made.append(key))
    _tables(tmp_path, [], [])
    with caplog.at_level(logging.WARNING, logger="flows.artifacts"):
        artifacts.publish_mine(REPORT, tmp_path)
    assert made == ["capmine-failed-inputs", "capmine-report"]
    assert "could not publish the capmine-mine-summary artifact: RuntimeError: server said no" in (
        caplog.text
    )


def test_a_flow_publishes_its_artifacts_on_its_run(tmp_path, prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _tables(tmp_path, [], [{"video": "/v/1.mp4", "status": "failed", "error": "decode: bad"}])

    @flow(name="publish-probe")
    def probe() -> None:
        artifacts.publish_mine(REPORT, tmp_path)
        artifacts.publish_metrics("capmine-train-metrics", {"step": 5, "final": {"loss": 0.5}}, "t")

    run_id = probe(return_state=True).state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    by_key = {a.key: a for a in found}
    assert set(by_key) == {"capmine-mine-summary", "capmine-failed-inputs", "capmine-report",
                           "capmine-train-metrics"}  # fmt: skip
    metrics = json.loads(by_key["capmine-train-metrics"].data)
    assert metrics == {"metric": ["step", "final.loss"], "value": [5, "0.5000"]}
    assert by_key["capmine-mine-summary"].type == "markdown"
    assert "| clips kept | 7 |" in by_key["capmine-mine-summary"].data
    table = json.loads(by_key["capmine-failed-inputs"].data)
    assert table == {"input": ["/v/1.mp4"], "stage": ["video"], "kind": ["decode"],
                     "error": ["decode: bad"]}  # fmt: skip
    assert by_key["capmine-report"].data == f"[report.html](file://{tmp_path}/report.html)"
