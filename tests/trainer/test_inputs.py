"""Shards, embedder and class names as a user names them, turned into what a run reads."""

from __future__ import annotations

import json

import pytest

from trainer.inputs import read_classes, resolve_embedder, shard_spec


@pytest.fixture
def run_out(tmp_path):
    """A mining run's OUT/: shard 00000 complete, 00001 still being written (no stats)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("00000.tar", "00000_stats.json", "00001.tar"):
        (shards / name).write_bytes(b"")
    (tmp_path / "seeds.json").write_text(json.dumps({"embedder": "pkg.mod:factory"}))
    return tmp_path


def test_a_folder_becomes_its_complete_shards(run_out, tmp_path):
    assert shard_spec(str(run_out / "shards")) == str(run_out / "shards" / "00000.tar")
    assert shard_spec("a/{00000..00003}.tar") == "a/{00000..00003}.tar"  # patterns pass through
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no complete shard"):
        shard_spec(str(empty))


def test_the_embedder_is_the_given_one_else_the_mining_runs(run_out, tmp_path):
    tar = str(run_out / "shards" / "00000.tar")
    assert resolve_embedder("open_clip:ViT-B-32", tar) == "open_clip:ViT-B-32"
    assert resolve_embedder(None, tar) == "pkg.mod:factory"
    with pytest.raises(ValueError, match="--embedder"):
        resolve_embedder(None, str(tmp_path / "other" / "shards" / "00000.tar"))


def test_read_classes_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# tones\ndog\n\n  cat  \n")
    assert read_classes(path) == ["dog", "cat"]
    assert read_classes(None) is None
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no class names"):
        read_classes(path)
