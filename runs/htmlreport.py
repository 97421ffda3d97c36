"""``OUT/report.html``: a mining run for a person to judge, in one page that works offline.

:func:`write_html_report` reads what the run left in OUT (:mod:`runs.reportdata`)
and writes the page: totals per stage, a contact sheet of kept clips (click
one to play it), dropped clips by reason, the similarity histogram with the
threshold and its calibration, time and throughput per stage, and the failed
inputs. Pictures and clips are files beside it in ``OUT/report/`` (only those
shown: :mod:`runs.reportmedia`); plots are inline SVG (:mod:`runs.svgplots`).
The page loads nothing from anywhere else, and every text of the run's
(captions, keys, errors) is escaped.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from runs.reportdata import RunView, clip_captions, error_kind, failed_inputs, load_run
from runs.reportmedia import Media, ReportMedia, dropped_media, kept_media, sample_rows
from runs.svgplots import hbars, histogram
from shards.writer import atomic_write_bytes

KEPT_SHOWN = 60  # kept clips on the contact sheet at most
PER_REASON_SHOWN = 8  # dropped (or failed) clips shown per reason at most
FAILED_LISTED = 100  # failed videos and seeds listed at most, each
FATES = (("ok", "kept", "#54a24b"), ("dropped", "dropped", "#f58518"),
         ("failed", "failed", "#e45756"), ("not cut", "matched, no clip", "#9d9d9d"))  # fmt: skip

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 40px;color:#222;background:#fff}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}.muted{color:#666}code{font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px;background:#f8f8f8}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:12px}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px}
figure.clip{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px;background:#fcfcfc}
figure.clip video,figure.clip img{width:100%;aspect-ratio:16/9;object-fit:contain;background:#111;
display:block}
.noimg{width:100%;aspect-ratio:16/9;background:#eee;color:#888;display:flex;align-items:center;
justify-content:center}
figcaption{font-size:12px;margin-top:4px;word-break:break-word}figcaption ol{margin:2px 0;
padding-left:18px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}td.n{text-align:right}
"""


def write_html_report(out: str | Path) -> Path:
    """Write ``OUT/report.html`` (and its pictures and clips in ``OUT/report/``) for the run
    in ``out``; return the page's path. Pictures first, the page last, each atomically.

    Raises :class:`runs.reportdata.ReportError` naming a file of the run that is missing
    or unreadable.
    """
    view = load_run(out)
    media = ReportMedia(view.root)
    page = render_page(view, media)
    path = view.root / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    media.remove_stale()
    return path


def render_page(view: RunView, media: ReportMedia) -> str:
    """The page's HTML; the clips it shows get their files written by ``media``."""
    title = f"capmine report: {view.root.resolve()}"
    body = [_header(view), _totals(view), _kept(view, media), _dropped(view, media),
            _similarity(view), _timing(view), _failed(view)]  # fmt: skip
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


# ---------------------------------------------------------------- helpers


def _n(x: Any) -> str:
    """A figure as the page shows it: counts with separators, others to 4 decimals."""
    if isinstance(x, bool) or x is None:
        return escape(str(x))
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}".rstrip("0").rstrip(".")
    return escape(str(x))


def _section(ident: str, title: str, inner: str) -> str:
    return f'<section id="{ident}"><h2>{escape(title)}</h2>\n{inner}\n</section>'


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{_n(v)}</td>' if i in numeric else f"<td>{_n(v)}</td>"
            for i, v in enumerate(row)
        ) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{th}</tr>{body}</table>"


def _card(label: str, value: Any, note: str = "", ident: str = "") -> str:
    attr = f' id="total-{ident}"' if ident else ""
    return (f'<div class="card"{attr}><span>{escape(label)}</span><b>{_n(value)}</b>'
            f"<span>{escape(note)}</span></div>")  # fmt: skip


def _clips(n: int) -> str:
    return f"{n:,} clip" if n == 1 else f"{n:,} clips"


def _shown(shown: int, total: int, what: str) -> str:
    return f'<p class="muted">showing {shown:,} of {total:,} {escape(what)}</p>'


# ---------------------------------------------------------------- sections


def _header(view: RunView) -> str:
    r, when = view.report, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if view.refiltered:
        what = f"re-filtered from {view.source} with filters {_spec(r.get('filters'))}"
    else:
        params = r.get("params", {})
        what = (f"run {r.get('run', '?')}; embedder {params.get('embedder', '?')}; "
                f"filters {r.get('filters', {}).get('chain', '?')}")  # fmt: skip
    return (f"<h1>capmine run report</h1><p><code>{escape(str(view.root.resolve()))}</code>"
            f'</p><p class="muted">{escape(what)}; page written {when}</p>')  # fmt: skip


def _spec(spec: Any) -> str:
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True, default=str)


def _status_counts(view: RunView) -> Counter:
    return Counter(view.clips["status"].astype(str))


def _totals(view: RunView) -> str:
    counts = _status_counts(view)
    if view.refiltered:
        rf = view.report["refilter"]
        cards = [_card("clips", rf.get("clips", {}).get("total", len(view.clips)), "re-filtered",
                       "clips"),
                 _card("kept", counts["ok"], "", "kept"),
                 _card("dropped", counts["dropped"], "", "dropped"),
                 _card("failed", counts["failed"], "", "failed"),
                 _card("shards", rf.get("shards", len(view.shard_stats)), "", "shards")]  # fmt: skip
        return _section("totals", "Totals", f'<div class="cards">{"".join(cards)}</div>')
    r = view.report
    s, v, c = r.get("seeds", {}), r.get("videos", {}), r.get("clips", {})
    cards = [
        _card("seeds", s.get("n_seeds"), f"{s.get('n_ok')} embedded, {s.get('n_failed')} failed",
              "seeds"),
        _card("videos", v.get("total"), f"{v.get('ok')} scanned, {v.get('failed')} failed",
              "videos"),
        _card("frames", v.get("frames"), "sampled", "frames"),
        _card("matches", v.get("matches"), "frame-seed pairs", "matches"),
        _card("clips planned", c.get("planned"), "", "planned"),
        _card("kept", c.get("ok"), "written to shards", "kept"),
        _card("dropped", c.get("dropped"), "by filters", "dropped"),
        _card("failed", c.get("failed"), "cut or judged", "failed"),
        _card("shards", r.get("shards"), "", "shards"),
    ]  # fmt: skip
    note = ""
    if len(view.clips) != c.get("planned"):
        note = (
            f'<p class="muted">these are run {r.get("run", "?")}\'s; OUT/shards holds '
            f"{len(view.clips):,} clips of all runs ({counts['ok']:,} kept), shown below</p>"
        )
    return _section("totals", "Totals per stage", f'<div class="cards">{"".join(cards)}</div>'
                    + note)  # fmt: skip


def _clip_card(row: dict[str, Any], media: Media, extra: str = "") -> str:
    key = escape(str(row["key"]))
    if media.mp4:
        poster = f' poster="{escape(media.jpg)}"' if media.jpg else ""
        pic = f'<video controls preload="none"{poster} src="{escape(media.mp4)}"></video>'
    elif media.jpg:
        pic = f'<img src="{escape(media.jpg)}" alt="{key}" loading="lazy">'
    else:
        pic = '<div class="noimg">no picture kept</div>'
    caps = "".join(
        f"<li>{escape(str(c.get('caption', '')))} <span class=\"muted\">"
        f"({_n(float(c.get('similarity', math.nan)))})</span></li>"
        for c in clip_captions(row)
    )  # fmt: skip
    video = str(row["video"])
    name = video.rstrip("/").rsplit("/", 1)[-1]
    return (f'<figure class="clip" data-key="{key}">{pic}<figcaption><code class="key">{key}'
            f"</code><br>similarity <b>{_n(float(row['similarity']))}</b>; "
            f"{float(row['start']):.1f}&ndash;{float(row['end']):.1f} s of "
            f'<span title="{escape(video)}">{escape(name)}</span>{extra}<ol>{caps}</ol>'
            f"{_scores(row)}</figcaption></figure>")  # fmt: skip


def _scores(row: dict[str, Any]) -> str:
    try:
        scores = json.loads(row["scores"]) if isinstance(row.get("scores"), str) else {}
    except ValueError:
        scores = {}
    if not isinstance(scores, dict) or not scores:
        return ""
    items = ", ".join(f"{escape(str(k))} {_n(v)}" for k, v in sorted(scores.items()))
    return f'<details><summary class="muted">scores</summary>{items}</details>'


def _kept(view: RunView, media: ReportMedia) -> str:
    kept = view.clips[view.clips["status"] == "ok"]
    if kept.empty:
        return _section("kept", "Kept clips", "<p>No clip was kept.</p>")
    shown = sample_rows(kept, KEPT_SHOWN)
    files = kept_media(media, shown)
    cards = "".join(_clip_card(r, files.get(r["key"], Media())) for r in shown.to_dict("records"))
    intro = _shown(len(shown), len(kept), "kept clips, best similarity first (click to play)")
    return _section("kept", "Kept clips", f'{intro}<div class="sheet">{cards}</div>')


def _drop_groups(view: RunView) -> dict[str, pd.DataFrame]:
    """Dropped clips by reason and failed clips by error kind, the largest group first."""
    rows = view.clips[view.clips["status"] != "ok"].copy()
    if rows.empty:
        return {}
    rows["group"] = [
        str(reason) if status == "dropped" else f"failed: {error_kind(error)}"
        for status, reason, error in zip(rows["status"], rows["reason"], rows["error"], strict=True)
    ]  # fmt: skip
    sizes = rows["group"].value_counts()
    order = sorted(sizes.index, key=lambda g: (-sizes[g], g))
    return {g: rows[rows["group"] == g] for g in order}


def _dropped(view: RunView, media: ReportMedia) -> str:
    groups = _drop_groups(view)
    if not groups:
        return _section("dropped", "Dropped clips", "<p>No clip was dropped or failed.</p>")
    shown = {g: sample_rows(rows, PER_REASON_SHOWN) for g, rows in groups.items()}
    roots = [view.root] + ([view.source] if view.source is not None else [])
    files = dropped_media(media, pd.concat(shown.values()), roots)
    summary = _table(["reason", "clips", "shown"],
                     [[g, len(groups[g]), len(shown[g])] for g in groups], {1, 2})  # fmt: skip
    parts = [summary]
    for group, rows in shown.items():
        cards = "".join(
            _clip_card(r, files.get(r["key"], Media()), _error_note(r))
            for r in rows.to_dict("records")
        )
        ident = re.sub(r"[^A-Za-z0-9_-]+", "-", group)
        parts.append(f'<h3 id="reason-{ident}">{escape(group)}: {_clips(len(groups[group]))}'
                     f"</h3>{_shown(len(rows), len(groups[group]), 'clips')}"
                     f'<div class="sheet">{cards}</div>')  # fmt: skip
    return _section("dropped", "Dropped clips by reason", "\n".join(parts))


def _error_note(row: dict[str, Any]) -> str:
    error = row.get("error")
    return f'<br><span class="muted">{escape(error)}</span>' if isinstance(error, str) else ""


def _similarity(view: RunView) -> str:
    threshold = view.threshold or {}
    value = threshold.get("threshold")
    sims = [s for s, _ in view.matches if not math.isnan(s)]
    lines = [] if value is None else [(float(value), f"threshold {_n(float(value))}", "#d62728")]
    for name, q in (threshold.get("nulls") or {}).items():
        if isinstance(q, dict) and isinstance(q.get("q0.5"), (int, float)):
            lines.append((float(q["q0.5"]), f"null median ({name})", "#5778a4"))
    xs = sims + [x for x, _, _ in lines]
    lo, hi = _span(xs)
    series = [(label, [s for s, f in view.matches if f == fate], colour)
              for fate, label, colour in FATES]  # fmt: skip
    plot = histogram(series, lo=lo, hi=hi, lines=lines,
                     title="best similarity of each match (seed, video), by what became of it")  # fmt: skip
    intro = (f"<p>Best similarity of each matched (seed, video) segment: {len(sims):,} matches. "
             "A clip with several captions counts once per caption.</p>")  # fmt: skip
    return _section("similarity", "Similarity and threshold",
                    intro + plot + _calibration(threshold))  # fmt: skip


def _span(xs: list[float], step: float = 0.05) -> tuple[float, float]:
    """The histogram's x range: what it shows, widened to whole steps (CLIP similarities of
    real footage crowd into a few hundredths; a fixed [0, 1] would squeeze them)."""
    if not xs:
        return 0.0, 1.0
    lo = math.floor(min(xs) / step + 1e-9) * step
    hi = max(math.ceil(max(xs) / step - 1e-9) * step, lo + 2 * step)
    if hi > 1.0:  # a cosine similarity is at most 1
        hi, lo = 1.0, min(lo, 1.0 - 2 * step)
    return round(lo, 4), round(hi, 4)


def _calibration(threshold: dict[str, Any]) -> str:
    """Whatever the threshold record holds: its figures, then each table of quantiles."""
    if not threshold:
        return "<p>No threshold recorded for this run.</p>"
    scalars = [[k, v] for k, v in threshold.items() if not isinstance(v, (dict, list))]
    parts = ['<h3>Threshold and calibration</h3><div id="calibration">',
             _table(["figure", "value"], scalars, {1})]  # fmt: skip
    for name, value in threshold.items():
        if not isinstance(value, dict):
            continue
        rows = value if all(isinstance(v, dict) for v in value.values()) else {name: value}
        cols = sorted({k for r in rows.values() for k in r}, key=_quantile_order)
        parts.append(f"<h3>{escape(name)}</h3>" + _table(
            ["", *cols], [[n, *(r.get(c, "") for c in cols)] for n, r in rows.items()],
            set(range(1, len(cols) + 1))))  # fmt: skip
    return "".join(parts) + "</div>"


def _quantile_order(name: str) -> tuple:
    if name.startswith("q"):
        try:
            return (0, float(name[1:]))
        except ValueError:
            pass
    return (1, name)


STAGE_ORDER = ("seeds", "scan", "shards", "fetch", "decode", "embed", "shots")


def _in_order(stages: dict[str, Any]) -> list[tuple[str, float]]:
    """``stages`` in the order the run goes through them, unknown ones next, ``total`` last."""

    def rank(name: str) -> tuple[int, str]:
        if name == "total":
            return (len(STAGE_ORDER) + 1, name)
        return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)

    return [(k, float(v)) for k, v in sorted(stages.items(), key=lambda kv: rank(kv[0]))
            if isinstance(v, (int, float))]  # fmt: skip


def _rate(n: Any, seconds: Any, what: str) -> str:
    """``n`` things in ``seconds`` as a rate (``12.50 frames/s``); empty when not measured."""
    if not isinstance(n, (int, float)) or not isinstance(seconds, (int, float)) or seconds <= 0:
        return ""
    return f"{n / seconds:,.2f} {what}/s"


def _timing(view: RunView) -> str:
    r = view.report
    seconds = r.get("seconds") or {}
    if not seconds:
        return _section("timing", "Time and throughput",
                        "<p>No timings recorded (a re-filtered run keeps none).</p>")  # fmt: skip
    s, v, c = r.get("seeds", {}), r.get("videos", {}), r.get("clips", {})
    items = {"seeds": [("seeds", s.get("n_seeds"))],
             "scan": [("videos", v.get("total")), ("frames", v.get("frames"))],
             "shards": [("clips", c.get("planned"))], "total": [("clips kept", c.get("ok"))]}  # fmt: skip
    rows = []
    for stage, secs in _in_order(seconds):
        counted = items.get(stage, [])
        rates = "; ".join(x for what, n in counted if (x := _rate(n, secs, what)))
        rows.append([stage, secs, ", ".join(f"{_n(n)} {w}" for w, n in counted), rates])
    bars = hbars([(st, x, f"{x:.1f} s") for st, x in _in_order(seconds)],
                 title="seconds per stage")  # fmt: skip
    parts = [bars, _table(["stage", "seconds", "items", "throughput"], rows, {1})]
    parts.append(_video_seconds(r.get("video_seconds") or {}, v.get("frames")))
    parts.append(_filter_seconds(view.shard_stats))
    return _section("timing", "Time and throughput per stage", "".join(parts))


def _video_seconds(stages: dict[str, Any], frames: Any) -> str:
    if not stages:
        return ""
    rows = [[k, x, _rate(frames, x, "frames") if k in ("decode", "embed") else ""]
            for k, x in _in_order(stages)]  # fmt: skip
    return ("<h3>Scan, summed over videos</h3><p class=\"muted\">seconds added up over every "
            "video; videos scanned at once overlap, so these can exceed the scan's wall time</p>"
            + _table(["step", "seconds", "throughput"], rows, {1}))  # fmt: skip


def _filter_seconds(stats: list[dict[str, Any]]) -> str:
    """Seconds and clips scored per filter, summed over the shards' stats."""
    sums: dict[str, list[float]] = {}
    for st in stats:
        for chain in ("filters", "run_filters"):
            for name, f in (st.get(chain, {}).get("filters") or {}).items():
                acc = sums.setdefault(name, [0.0, 0])
                acc[0] += float(f.get("seconds", 0.0))
                acc[1] += int(f.get("scored", 0))
    if not sums:
        return ""
    rows = [[k, secs, int(n), _rate(n, secs, "clips")]
            for k, (secs, n) in sums.items()]  # fmt: skip
    return "<h3>Filters, summed over shards</h3>" + _table(
        ["filter", "seconds", "clips scored", "throughput"], rows, {1, 2}
    )


def _failed(view: RunView) -> str:
    failed = failed_inputs(view)
    if not failed:
        return _section("failed", "Failed inputs", "<p>No input failed.</p>")
    kinds = Counter((f["input"], f["kind"]) for f in failed)
    summary = _table(["input", "error kind", "count"],
                     [[i, k, n] for (i, k), n in sorted(kinds.items(), key=lambda x: (-x[1], x[0]))],
                     {2})  # fmt: skip
    parts = [summary]
    for what in ("video", "seed"):
        rows = [f for f in failed if f["input"] == what]
        if rows:
            parts.append(f"<h3>Failed {what}s: {len(rows):,}</h3>"
                         + _shown(min(len(rows), FAILED_LISTED), len(rows), f"failed {what}s")
                         + _table([what, "error kind", "error"],
                                  [[f["name"], f["kind"], f["error"]]
                                   for f in rows[:FAILED_LISTED]]))  # fmt: skip
    return _section("failed", "Failed inputs", "".join(parts))
