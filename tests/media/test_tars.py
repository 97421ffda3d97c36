"""Tar grouping: webdataset's rule for keys, one sample per run of members."""

from __future__ import annotations

import io
import tarfile

from media.tars import iter_raw_samples, split_name
from shards.reader import iter_samples


def _tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_split_name_follows_webdataset():
    assert split_name("abc.mp4") == ("abc", "mp4")
    assert split_name("dir.x/abc.seg.json") == ("dir.x/abc", "seg.json")
    assert split_name("noext") is None


def test_members_group_by_key_in_tar_order(tmp_path):
    _tar(tmp_path / "s.tar", [("a.mp4", b"A"), ("a.txt", b"cap a"), ("b.mp4", b"B"),
                              ("README", b"x"), ("b.json", b'{"k": 1}')])  # fmt: skip
    raw = list(iter_raw_samples(tmp_path / "s.tar"))
    assert raw == [
        {"__key__": "a", "mp4": b"A", "txt": b"cap a"},
        {"__key__": "b", "mp4": b"B", "json": b'{"k": 1}'},
    ]
    decoded = list(iter_samples(tmp_path / "s.tar"))
    assert decoded[0]["txt"] == "cap a" and decoded[1]["json"] == {"k": 1}
