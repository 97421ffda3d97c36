"""report.html on hand-made runs: what it shows, what it samples, what it escapes, the files
it writes beside it, and the errors that name a broken file."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runs.folder import RunFolder
from runs.htmlreport import KEPT_SHOWN, PER_REASON_SHOWN, write_html_report
from runs.refilter import refilter
from runs.report import summary_lines
from runs.reportdata import ReportError, error_kind
from runs.stages import FilterSetup
from runs.svgplots import bin_counts, histogram
from shards.record import Caption, ClipRecord
from shards.writer import write_shard, write_table

EVIL = '<script>alert("x")</script> & <b>'


def _jpeg(grey: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((90, 160, 3), grey, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _clip(tmp, i, status="ok", reason=None, error=None, caption=None, sim=None, video="v"):
    """Clip ``i`` of video ``video`` at ``i`` s; kept ones carry an mp4 and a jpg."""
    rec = ClipRecord(
        key=f"{video}-{i:03d}_{i:09d}", video=f"/data/{video}.mp4", video_id=video,
        start=float(i), end=i + 4.0, match_time=i + 1.0,
        similarity=0.9 - i * 0.001 if sim is None else sim,
        captions=[Caption("s1", caption or f"caption {i}", 0.9 - i * 0.001, i + 1.0)],
        scores={"motion": 0.5}, status=status, reason=reason, error=error,
    )  # fmt: skip
    if status == "ok":
        media = tmp / "media"
        media.mkdir(exist_ok=True)
        (media / f"{rec.key}.mp4").write_bytes(b"MP4-%d" % i)
        (media / f"{rec.key}.jpg").write_bytes(_jpeg(20 + i % 200))
        rec.mp4, rec.jpg = str(media / f"{rec.key}.mp4"), str(media / f"{rec.key}.jpg")
    return rec


def _report(clips: dict[str, int], shards: int) -> dict:
    return {
        "params": {"embedder": "miners.embedders:pixel_embedder"},
        "threshold": {"threshold": 0.5, "basis": "calibrated on 3 seeds", "false_match_rate": 0.001,
                      "nulls": {"frame_vs_scrambled_seeds": {"q0.5": 0.12, "q0.99": 0.45}}},
        "seeds": {"n_seeds": 4, "n_ok": 3, "n_failed": 1, "reused": False, "embedder": "x"},
        "videos": {"total": 3, "ok": 2, "failed": 1, "frames": 240, "matches": 37},
        "clips": {"planned": sum(clips.values()), **clips},
        "filters": {"chain": "default", "dropped": {}, "examples": {}},
        "shards": shards, "seconds": {"seeds": 1.0, "scan": 4.0, "shards": 2.0, "total": 7.0},
        "video_seconds": {"fetch": 0.1, "decode": 2.0, "embed": 1.0, "shots": 0.5}, "run": 0,
    }  # fmt: skip


def _run(tmp, shards: list[list[ClipRecord]]):
    """A finished run of these shards, with a failed video and a failed seed."""
    out = tmp / "out"
    for i, records in enumerate(shards):
        write_shard(out / "shards", i, records)
    flat = [r for s in shards for r in s]
    counts = {k: sum(r.status == k for r in flat) for k in ("ok", "dropped", "failed")}
    (out / "report.json").write_text(json.dumps(_report(counts, len(shards))))
    write_table(out / "videos.parquet", [
        {"video": "/data/v.mp4", "video_id": "v", "status": "ok", "error": None},
        {"video": "/data/gone.mp4", "video_id": "gone", "status": "failed",
         "error": f"fetch not_found: /data/gone.mp4: {EVIL}"},
    ])  # fmt: skip
    write_table(out / "seeds.parquet", [
        {"id": "s1", "caption": "c", "image": "/s/1.jpg", "status": "ok", "error": None, "row": 0},
        {"id": "bad", "caption": "c", "image": "/s/bad.jpg", "status": "failed",
         "error": "/s/bad.jpg: not a decodable image: cannot identify", "row": -1},
    ])  # fmt: skip
    return out


def _srcs(html: str) -> list[str]:
    return re.findall(r'(?:src|poster|href)="([^"]*)"', html)


def test_page_shows_each_section_escapes_user_text_and_names_no_url(tmp_path):
    shard = [_clip(tmp_path, 0, caption=EVIL), _clip(tmp_path, 1), _clip(tmp_path, 2),
             _clip(tmp_path, 3, "dropped", "static"), _clip(tmp_path, 4, "dropped", "static"),
             _clip(tmp_path, 5, "failed", error=f"cut: ffmpeg said {EVIL}")]  # fmt: skip
    out = _run(tmp_path, [shard])
    page = write_html_report(out)
    html = page.read_text()
    assert page == out / "report.html"
    for rec in shard[:3]:
        assert f'data-key="{rec.key}"' in html
        assert (out / "report" / f"{rec.key}.mp4").read_bytes() == Path(rec.mp4).read_bytes()
        assert Image.open(out / "report" / f"{rec.key}.jpg").size == (160, 90)
    assert 'id="total-kept"><span>kept</span><b>3</b>' in html
    assert "static: 2 clips" in html and "failed: cut: 1 clip<" in html
    assert "threshold 0.5" in html and "frame_vs_scrambled_seeds" in html and "0.45" in html
    assert "fetch not_found" in html and "not a decodable image" in html
    assert "240 frames" in html and "60.00 frames/s" in html  # 240 frames in 4 s of scanning
    assert "<script" not in html and EVIL not in html
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;") == 3
    assert "http:" not in html and "https:" not in html and "url(" not in html
    srcs = _srcs(html)
    assert srcs and all(s.startswith("report/") and (out / s).is_file() for s in srcs)


def test_a_large_run_is_sampled_the_same_way_every_time(tmp_path):
    kept = [_clip(tmp_path, i) for i in range(100)]
    dropped = [_clip(tmp_path, 100 + i, "dropped", "short_caption") for i in range(20)]
    out = _run(tmp_path, [kept[:50] + dropped[:10], kept[50:] + dropped[10:]])
    html = write_html_report(out).read_text()
    shown = re.findall(r'<figure class="clip" data-key="([^"]+)"', html)
    assert len(shown) == KEPT_SHOWN + PER_REASON_SHOWN
    assert f"showing {KEPT_SHOWN} of 100 kept clips" in html
    assert f"showing {PER_REASON_SHOWN} of 20 clips" in html
    assert kept[0].key in shown and kept[-1].key in shown  # the best and the worst
    files = sorted(p.name for p in (out / "report").iterdir())
    assert len(files) == 2 * KEPT_SHOWN  # kept: jpg + mp4; dropped ones have no picture here
    assert re.findall(r'data-key="([^"]+)"', write_html_report(out).read_text()) == shown
    assert sorted(p.name for p in (out / "report").iterdir()) == files


def test_dropped_pictures_come_from_kept_media_else_the_peak_still(tmp_path):
    shard = [_clip(tmp_path, 0), _clip(tmp_path, 1, "dropped", "static"),
             _clip(tmp_path, 2, "dropped", "static"), _clip(tmp_path, 3, "dropped", "static")]  # fmt: skip
    out = _run(tmp_path, [shard])
    (out / "dropped").mkdir()
    with tarfile.open(out / "dropped" / "00000.tar", "w") as tar:  # --keep-dropped's layout
        for name, data in ((f"{shard[1].key}.mp4", b"DROPPED-MP4"),
                           (f"{shard[1].key}.jpg", _jpeg(200))):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    RunFolder(out).save_peak_stills("v", {shard[2].match_time: np.full((40, 60, 3), 90, np.uint8)})
    html = write_html_report(out).read_text()
    assert (out / "report" / f"{shard[1].key}.mp4").read_bytes() == b"DROPPED-MP4"
    assert f'poster="report/{shard[1].key}.jpg" src="report/{shard[1].key}.mp4"' in html
    assert f'<img src="report/{shard[2].key}.jpg"' in html
    assert Image.open(out / "report" / f"{shard[2].key}.jpg").size == (60, 40)
    card = html[html.index(f'data-key="{shard[3].key}"') :]
    assert card.index("no picture kept") < card.index("</figure>")


def test_reruns_replace_only_the_reports_own_files(tmp_path):
    out = _run(tmp_path, [[_clip(tmp_path, 0)]])
    folder = out / "report"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "v-009_000000009.jpg").write_bytes(b"an older report's")
    write_html_report(out)
    assert (folder / "notes.txt").exists() and not (folder / "v-009_000000009.jpg").exists()
    assert (folder / "v-000_000000000.mp4").exists()
    RunFolder(out).start_over()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert not (out / "report.html").exists()


def test_a_run_with_no_clip_still_gets_a_page(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(_report({"ok": 0, "dropped": 0, "failed": 0}, 0)))
    html = write_html_report(out).read_text()
    assert "No clip was kept." in html and "No clip was dropped or failed." in html
    assert "<svg" in html and "No input failed." in html
    assert not (out / "report").exists()


def test_a_refiltered_run_gets_its_page(tmp_path):
    shard = [_clip(tmp_path, i) for i in range(3)]
    for i, db in enumerate((-10.0, -30.0, -70.0)):
        shard[i].scores = {"has_audio": 1.0, "audio_rms_db": db}
    src = _run(tmp_path, [shard])
    spec = tmp_path / "f.yaml"
    spec.write_text("filters:\n  - name: audio\n    min_rms_db: -35\n")
    report = refilter(src, tmp_path / "strict", FilterSetup(str(spec)))
    page = tmp_path / "strict" / "report.html"
    assert report["report_html"] == str(page)
    html = page.read_text()
    assert f"re-filtered from {src}" in html and "threshold 0.5" in html  # the source's
    assert 'id="total-kept"><span>kept</span><b>2</b>' in html and "silent: 1 clip<" in html
    assert f'data-key="{shard[0].key}"' in html


def test_missing_or_broken_files_are_named(tmp_path):
    out = _run(tmp_path, [[_clip(tmp_path, 0)]])
    (out / "shards" / "00000.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ReportError, match=r"00000\.tar cannot be read"):
        write_html_report(out)
    (out / "shards" / "00000.parquet").write_bytes(b"garbage")
    with pytest.raises(ReportError, match=r"00000\.parquet cannot be read"):
        write_html_report(out)
    (out / "report.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"report\.json cannot be read"):
        write_html_report(out)
    (out / "report.json").unlink()
    with pytest.raises(ReportError, match=r"report\.json is missing"):
        write_html_report(out)
    with pytest.raises(ReportError, match="is not a folder"):
        write_html_report(tmp_path / "nowhere")


def test_capmine_report_on_a_folder_without_a_run_says_so_in_one_line(tmp_path, capsys):
    from flows.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"capmine: error: {tmp_path / 'report.json'} is missing: {tmp_path} holds no "
                   "finished capmine run (capmine mine or capmine filter writes it at the end)")  # fmt: skip
    assert not (tmp_path / ".capmine").exists()  # not claimed


def test_error_kinds():
    assert error_kind("fetch not_found: /a/b.mp4: /a/b.mp4 does not exist") == "fetch not_found"
    assert error_kind("decode: /x.mp4: ffprobe failed") == "decode"
    assert error_kind("embed: CUDA out of memory") == "embed"
    assert error_kind("not a decodable image: cannot identify") == "not a decodable image"
    assert error_kind("cannot read /s/x.jpg: Permission denied") == "cannot read"
    assert error_kind("/s/x.jpg: broken") == "other"
    assert error_kind(None) == error_kind("") == "unknown"


def test_histogram_counts_and_threshold_line():
    assert bin_counts([0.0, 0.05, 0.5, 0.99, 1.0, 2.0, -1.0], 0.0, 1.0, 10) == [
        3, 0, 0, 0, 0, 1, 0, 0, 0, 3]  # fmt: skip
    svg = histogram([("kept", [0.9, 0.95], "#0a0"), ("<dropped>", [0.91], "#f80")], lo=0.0,
                    hi=1.0, lines=[(0.5, "threshold 0.5", "#d00")])  # fmt: skip
    assert "threshold 0.5" in svg and "kept (2)" in svg and "&lt;dropped&gt; (1)" in svg
    assert "http" not in svg


def test_summary_ends_with_the_page():
    report = _report({"ok": 1, "dropped": 0, "failed": 0}, 1)
    assert summary_lines(report, "out")[-1] == "  report: out/report.html"
    report["report_html_error"] = "out/shards/00000.tar cannot be read: bad"
    assert summary_lines(report, "out")[-1].startswith("  report: not written (out/shards/")


def test_finish_run_writes_the_page_last_and_survives_one_it_cannot_write(tmp_path):
    from runs.records import Ledger, RunPlan
    from runs.report import finish_run

    def finish(out):
        out.mkdir(exist_ok=True)
        return finish_run(RunFolder(out), plan=RunPlan(run=0, videos=[], clips=[], shards=[]),
                          ledger=Ledger(), scans=[], videos=[],
                          report=_report({"ok": 0, "dropped": 0, "failed": 0}, 0))  # fmt: skip

    report = finish(tmp_path / "good")
    assert report["report_html"] == str(tmp_path / "good" / "report.html")
    assert (tmp_path / "good" / "report.html").is_file()
    broken = _run(tmp_path, [[_clip(tmp_path, 0)]])
    (broken / "shards" / "00000.parquet").write_bytes(b"garbage")
    report = finish(broken)
    assert report["report_html"] is None and "00000.parquet" in report["report_html_error"]
    assert json.loads((broken / "report.json").read_text())["run"] == 0  # the run stands
    assert not (broken / "report.html").exists()
    assert summary_lines(report, str(broken))[-1].startswith("  report: not written (")


def test_histogram_range_follows_the_similarities():
    from runs.htmlreport import _span

    assert _span([0.27, 0.31, 0.2292]) == (0.2, 0.35)  # real CLIP figures are not squeezed
    assert _span([0.99, 1.0]) == (0.9, 1.0) and _span([]) == (0.0, 1.0)
