"""The run report in a real browser: a small mined run's report.html opened in headless
Chromium, its screenshot and its DOM checked against the run's own files.

Chromium is Debian's ``chromium`` (``make test`` installs it through ``make test-deps``);
without it these tests fail, saying so.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image, ImageStat

from flows.cli import main
from flows.params import MineParams
from runs.browser import BrowserError, chromium, dump_dom, screenshot
from synth.planted import make_synthetic_set

EMBEDDER = "miners.embedders:pixel_embedder"


@pytest.fixture(scope="module")
def mined(tmp_path_factory, prefect_harness):
    """A small planted set mined with the weight-free embedder; a caption-length bound drops
    the longer captions, so the page has kept and dropped clips and failed inputs."""
    from flows.mine import run_mine

    root = tmp_path_factory.mktemp("browser")
    manifest = make_synthetic_set(root / "data", n_seeds=5, n_unplanted=1, n_videos=2,
                                  seconds=20.0)  # fmt: skip
    words = sorted(len(c.split()) for c in manifest["seeds"].values())
    spec = root / "filters.yaml"
    spec.write_text(f"filters:\n  - name: text\n    max_words: {words[len(words) // 2]}\n")
    params = MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / "out"), embedder=EMBEDDER, shard_size=3, device="cpu", filters=str(spec),
    )  # fmt: skip
    report = run_mine(params)
    return root / "out", report


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium, or a failure saying how to install it (asked for before the run is mined)."""
    try:
        return chromium()
    except BrowserError as e:
        pytest.fail(str(e))


def test_the_run_writes_its_page_and_the_summary_names_it(mined):
    out, report = mined
    from runs.report import summary_lines

    assert report["report_html"] == str(out / "report.html") and (out / "report.html").is_file()
    assert summary_lines(report, str(out))[-1] == f"  report: {out / 'report.html'}"


def test_chromium_renders_the_page_with_the_runs_figures_and_every_kept_key(
    browser, mined, tmp_path
):
    out, report = mined
    rows = pd.concat(pd.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet")))
    kept = rows.loc[rows["status"] == "ok", "key"].tolist()
    dropped = rows.loc[rows["status"] == "dropped", "reason"].value_counts().to_dict()
    assert kept and dropped  # the page has both to show
    dom = dump_dom(out / "report.html")
    for key in kept:
        assert f'data-key="{key}"' in dom and f'src="report/{key}.mp4"' in dom
    c = report["clips"]
    for ident, value in (("kept", c["ok"]), ("dropped", c["dropped"]),
                         ("planned", c["planned"]), ("videos", report["videos"]["total"])):  # fmt: skip
        assert f'id="total-{ident}"><span>{ident if ident != "planned" else "clips planned"}' \
               f"</span><b>{value}</b>" in dom  # fmt: skip
    assert f"threshold {report['threshold']['threshold']:g}" in dom
    for reason, n in dropped.items():
        assert f"{reason}: {n} clip{'s' if n > 1 else ''}<" in dom
    assert "fetch not_found" in dom and "not a decodable image" in dom  # the failed inputs
    png = screenshot(out / "report.html", tmp_path / "page.png", width=1280, height=1600)
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        spread = ImageStat.Stat(rgb.convert("L")).stddev[0]
    assert rgb.size == (1280, 1600)
    assert len(colours) > 200, len(colours)  # thumbnails, plots and text, not a blank page
    assert spread > 10, spread


def test_capmine_report_writes_the_page_again(mined, capsys):
    out, _ = mined
    page = out / "report.html"
    page.unlink()
    (out / "report" / "stale_000001000.jpg").write_bytes(b"an earlier report's picture")
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"capmine report: {page}"
    assert page.is_file() and not (out / "report" / "stale_000001000.jpg").exists()
    html = page.read_text()
    assert "http:" not in html and "https:" not in html and "url(" not in html
    json.loads((out / "report.json").read_text())  # untouched and whole
