"""read_videos: every accepted input format, relative paths, duplicates and clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from miners.videos import VideoInput, read_videos
from shards.keys import is_valid_key, video_id_for

URL = "https://example.org/watch?v=abc"


def _urls(videos: list[VideoInput]) -> list[str]:
    return [v.url for v in videos]


def test_text_list_skips_comments_and_resolves_relative_paths(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    listing = lists / "videos.txt"
    listing.write_text(
        "# my videos\n\nclips/a.mp4\n  ../b.mkv  \n/abs/c.webm\n" + URL + "\n# end\n"
    )
    videos = read_videos(listing)
    assert _urls(videos) == [
        str(lists / "clips" / "a.mp4"),
        str(tmp_path / "b.mkv"),
        "/abs/c.webm",
        URL,
    ]
    assert all(v.meta == {} for v in videos)
    assert all(v.video_id == video_id_for(v.url) and is_valid_key(v.video_id) for v in videos)


def test_list_without_extension_is_text(tmp_path: Path) -> None:
    listing = tmp_path / "VIDEOS"
    listing.write_text(URL + "\n")
    assert _urls(read_videos(listing)) == [URL]


def test_csv_keeps_metadata_columns(tmp_path: Path) -> None:
    table = tmp_path / "videos.csv"
    pd.DataFrame(
        {"url": [URL, "local.mp4"], "caption": ["a dog", None], "duration": [12.5, 3.0]}
    ).to_csv(table, index=False)
    videos = read_videos(table)
    assert _urls(videos) == [URL, str(tmp_path / "local.mp4")]
    assert videos[0].meta == {"caption": "a dog", "duration": 12.5}
    assert videos[1].meta == {"caption": None, "duration": 3.0}
    json.dumps([v.meta for v in videos])  # JSON-serialisable


def test_tsv(tmp_path: Path) -> None:
    table = tmp_path / "videos.tsv"
    table.write_text(f"url\tid\n{URL}\t7\n")
    videos = read_videos(table)
    assert _urls(videos) == [URL]
    assert videos[0].meta == {"id": 7}


def test_parquet_with_numpy_and_timestamp_meta(tmp_path: Path) -> None:
    table = tmp_path / "videos.parquet"
    pd.DataFrame(
        {
            "url": [URL],
            "views": pd.array([42], dtype="int64"),
            "when": [pd.Timestamp("2024-01-02T03:04:05")],
        }
    ).to_parquet(table)
    (video,) = read_videos(table)
    assert video.url == URL
    assert video.meta["views"] == 42
    assert video.meta["when"].startswith("2024-01-02T03:04:05")
    json.dumps(video.meta)


def test_jsonl(tmp_path: Path) -> None:
    table = tmp_path / "videos.jsonl"
    rows = [{"url": URL, "tags": ["x", "y"]}, {"url": "sub/v.mp4", "tags": []}]
    table.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    videos = read_videos(table)
    assert _urls(videos) == [URL, str(tmp_path / "sub" / "v.mp4")]
    assert videos[0].meta == {"tags": ["x", "y"]}


def test_folder_is_recursive_sorted_and_video_only(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    for name in ["b.mp4", "a/z.MKV", "a/y.webm", "notes.txt", "._b.mp4", "c.ts"]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    videos = read_videos(folder)
    root = folder.resolve()
    assert _urls(videos) == [str(root / n) for n in ["a/y.webm", "a/z.MKV", "b.mp4", "c.ts"]]


def test_duplicates_kept_once_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = tmp_path / "videos.csv"
    pd.DataFrame({"url": [URL, "v.mp4", URL, "./v.mp4"], "n": [1, 2, 3, 4]}).to_csv(
        table, index=False
    )
    with caplog.at_level(logging.WARNING, logger="miners.videos"):
        videos = read_videos(table)
    assert _urls(videos) == [URL, str(tmp_path / "v.mp4")]
    assert [v.meta["n"] for v in videos] == [1, 2]  # first wins
    assert "duplicated" in caplog.text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt.*url"):
        read_videos(tmp_path / "nope.txt")


def test_table_without_url_column(tmp_path: Path) -> None:
    table = tmp_path / "videos.csv"
    table.write_text("path,caption\na.mp4,x\n")
    with pytest.raises(ValueError, match=r"videos.csv.*no 'url' column.*\['path', 'caption'\]"):
        read_videos(table)


def test_unknown_format(tmp_path: Path) -> None:
    table = tmp_path / "videos.xlsx"
    table.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match=r"videos.xlsx.*text file.*parquet.*folder"):
        read_videos(table)


def test_relative_file_urls_resolve_against_the_list(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    listing = lists / "videos.txt"
    listing.write_text(
        "file:-report\nfile:clips/a.mp4\n-b.mp4\nfile:///abs/c.mp4\nfile:/abs/d.mp4\n"
    )
    assert _urls(read_videos(listing)) == [
        str(lists / "-report"),
        str(lists / "clips" / "a.mp4"),
        str(lists / "-b.mp4"),
        "file:///abs/c.mp4",
        "file:/abs/d.mp4",
    ]
