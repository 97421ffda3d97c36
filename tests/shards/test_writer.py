import json

import pandas as pd
import webdataset as wds

from shards.keys import clip_key, is_valid_key, video_id_for
from shards.reader import complete_shards, iter_samples, read_sidecars
from shards.record import Caption, ClipRecord
from shards.writer import is_complete, write_shard


def _record(tmp_path, i, status="ok"):
    mp4 = tmp_path / f"m{i}.mp4"
    mp4.write_bytes(b"mp4-%d" % i)
    jpg = tmp_path / f"m{i}.jpg"
    jpg.write_bytes(b"jpg-%d" % i)
    return ClipRecord(
        key=clip_key("vid-abc", i * 10.0), video="/v.mp4", video_id="vid-abc", start=i * 10.0,
        end=i * 10.0 + 10, match_time=i * 10.0 + 5, similarity=0.9,
        captions=[Caption("s1", f"caption {i}", 0.9, i * 10.0 + 5), Caption("s2", "other", 0.8, 1.0)],
        status=status, reason="static" if status == "dropped" else None, mp4=str(mp4), jpg=str(jpg),
    )  # fmt: skip


def test_keys_are_safe_and_stable():
    a = video_id_for("https://host.example/watch?v=abc.def")
    assert a == video_id_for("https://host.example/watch?v=abc.def") and is_valid_key(a)
    assert video_id_for("/a/clip.mp4") != video_id_for("/b/clip.mp4")
    assert video_id_for("/a/my clip.v2.mp4").startswith("my_clip_v2-")
    assert clip_key("v-1", 12.3456) == "v-1_000012346" and not is_valid_key("a.b")


def test_shard_round_trip_with_webdataset(tmp_path):
    recs = [_record(tmp_path, i) for i in range(3)] + [_record(tmp_path, 3, status="dropped")]
    stats = write_shard(tmp_path / "shards", 7, recs)
    assert stats["count"] == 4 and stats["successes"] == 3 and stats["reasons"] == {"static": 1}
    tar = tmp_path / "shards" / "00007.tar"
    assert is_complete(tmp_path / "shards", 7) and complete_shards(tmp_path / "shards") == [tar]
    samples = list(wds.WebDataset(str(tar), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [r.key for r in recs[:3]]
    s0 = samples[1]
    assert s0["txt"] == b"caption 1" and s0["mp4"] == b"mp4-1" and s0["jpg"] == b"jpg-1"
    meta = json.loads(s0["json"])
    assert meta["start"] == 10.0 and meta["captions"][1]["seed_id"] == "s2"
    assert set(meta) >= {
        "key",
        "video",
        "video_id",
        "start",
        "end",
        "match_time",
        "similarity",
        "captions",
        "scores",
        "source",
    }
    side = pd.read_parquet(tmp_path / "shards" / "00007.parquet")
    assert (
        list(side["status"]) == ["ok", "ok", "ok", "dropped"] and side["reason"].iloc[3] == "static"
    )
    assert len(read_sidecars(tmp_path / "shards")) == 4
    assert [s["__key__"] for s in iter_samples(tar)] == [r.key for r in recs[:3]]
    assert not list((tmp_path / "shards").glob(".*"))  # no temp files left


def test_unreadable_media_fails_that_record_only(tmp_path):
    recs = [_record(tmp_path, 0), _record(tmp_path, 1)]
    recs[0].mp4 = str(tmp_path / "gone.mp4")
    stats = write_shard(tmp_path, 0, recs)
    assert stats["status"] == {"failed": 1, "ok": 1}
    assert "media unreadable" in pd.read_parquet(tmp_path / "00000.parquet")["error"].iloc[0]
