"""Seed reading and loading: every accepted layout, with the expected colour painted in each image."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from media import MediaError
from media.images import decode_image, preprocess
from miners import seeds as seeds_module
from miners.seeds import Seed, check_seeds, load_seed_images, read_seeds
from synth.testmedia import truncate, write_image

RED = (200, 30, 40)
GREEN = (20, 180, 60)
BLUE = (30, 50, 210)
SIZE = 8


def solid(color: tuple[int, int, int], width: int = 12, height: int = 10) -> np.ndarray:
    return np.full((height, width, 3), color, dtype=np.uint8)


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(solid(color)).save(buffer, format="PNG")
    return buffer.getvalue()


def load(seeds: list[Seed], **kwargs) -> list[tuple[int, np.ndarray | None, str | None]]:
    return list(load_seed_images(seeds, SIZE, **kwargs))


def assert_colour(array: np.ndarray | None, color: tuple[int, int, int]) -> None:
    assert array is not None
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    assert (array == np.array(color, dtype=np.uint8)).all(), array[0, 0]


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """``img/red.png`` and ``img/green.png`` under tmp_path; returns tmp_path."""
    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img" / "red.png", solid(RED))
    write_image(tmp_path / "img" / "green.png", solid(GREEN))
    return tmp_path


# ---------------------------------------------------------------- preprocessing


def landscape() -> np.ndarray:
    """40 wide, 20 high: red left quarter, green middle half, blue right quarter."""
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10], array[:, 10:30], array[:, 30:] = RED, GREEN, BLUE
    return array


def test_preprocess_crops_the_centre_of_a_landscape_image():
    out = preprocess(Image.fromarray(landscape()), 20)
    assert out.shape == (20, 20, 3)
    assert (out == np.array(GREEN, dtype=np.uint8)).all()  # both side quarters are gone

    small = preprocess(Image.fromarray(landscape()), 10)  # scaled to 20x10, then cropped
    assert small.shape == (10, 10, 3) and small.dtype == np.uint8
    assert (np.abs(small.astype(int) - GREEN).max(axis=2) < 40).all()


def test_preprocess_crops_the_centre_of_a_portrait_image():
    array = landscape().transpose(1, 0, 2).copy()  # 20 wide, 40 high: red top, blue bottom
    out = preprocess(Image.fromarray(array), 20)
    assert (out == np.array(GREEN, dtype=np.uint8)).all()
    assert preprocess(Image.fromarray(array), 6).shape == (6, 6, 3)


def test_preprocess_scales_the_shorter_side_up():
    out = preprocess(Image.fromarray(solid(BLUE, width=6, height=3)), 12)
    assert out.shape == (12, 12, 3)
    assert (out == np.array(BLUE, dtype=np.uint8)).all()


def rgba_with_a_hole() -> Image.Image:
    array = np.zeros((4, 4, 4), dtype=np.uint8)
    array[..., :3], array[..., 3] = RED, 255
    array[0, 0, 3] = 0  # one transparent pixel
    return Image.fromarray(array, mode="RGBA")


def palette_image() -> Image.Image:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, *GREEN])
    return image


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (rgba_with_a_hole, RED),
        (lambda: Image.new("LA", (4, 4), (77, 255)), (77, 77, 77)),
        (lambda: Image.new("L", (4, 4), 77), (77, 77, 77)),
        (palette_image, GREEN),
        (lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: Image.fromarray(np.full((4, 4), 100 * 257, dtype=np.uint16)), (100, 100, 100)),
    ],
    ids=["rgba", "la", "grey", "palette", "cmyk", "grey16"],
)
def test_preprocess_converts_any_mode_to_rgb(make: Callable[[], Image.Image], expected):
    out = preprocess(make(), 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert tuple(out[2, 2]) == expected


def test_transparent_pixels_become_white():
    out = preprocess(rgba_with_a_hole(), 4)
    assert tuple(out[0, 0]) == (255, 255, 255)


def test_preprocess_applies_exif_orientation():
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20], array[:, 20:] = RED, GREEN  # stored sideways: red left, green right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": left becomes top
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())

    out = decode_image(buffer.getvalue(), 20)
    assert np.abs(out[2, 17].astype(int) - RED).max() < 40  # top is red
    assert np.abs(out[17, 2].astype(int) - GREEN).max() < 40  # bottom is green


def test_decode_image_rejects_garbage_and_truncated_bytes():
    with pytest.raises(MediaError, match="not a decodable image"):
        decode_image(b"this is not an image", 8)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    with pytest.raises(MediaError, match="not a decodable image"):
        decode_image(buffer.getvalue()[:2000], 8)


# ---------------------------------------------------------------- table formats


def test_cc3m_tsv_without_header(pictures: Path):
    path = pictures / "cc3m.tsv"
    path.write_text('a red "square"\timg/red.png\n  a green square \timg/green.png\n')
    seeds = read_seeds(path)
    assert [s.id for s in seeds] == ["0", "1"]
    assert [s.caption for s in seeds] == ['a red "square"', "a green square"]
    assert seeds[0].image == str(pictures / "img" / "red.png")  # relative to the seeds file
    results = load(seeds, workers=2)
    assert_colour(results[0][1], RED)
    assert_colour(results[1][1], GREEN)


def write_table(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_json(path, orient="records")  # a JSON array
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_tables_with_header(pictures: Path, suffix: str):
    rows = [
        {"id": "a", "url": "img/red.png", "caption": " a red\nsquare "},
        {"id": "b", "url": str(pictures / "img" / "green.png"), "caption": "a green square"},
        {"id": "c", "url": "img/red.png", "caption": None},
        {"id": "d", "url": None, "caption": "a caption without a picture"},
    ]
    seeds = read_seeds(write_table(pictures / f"seeds{suffix}", rows))

    assert [s.id for s in seeds] == ["a", "b", "c", "d"]
    assert seeds[0].caption == "a red square"
    assert seeds[0].image == str(pictures / "img" / "red.png")
    assert [s.error for s in seeds] == [None, None, "missing caption", "missing image"]
    results = load(seeds, workers=3)
    assert [r[0] for r in results] == [0, 1, 2, 3]
    assert_colour(results[0][1], RED)
    assert_colour(results[1][1], GREEN)
    assert results[2][1:] == (None, "missing caption")
    assert results[3][1:] == (None, "missing image")


def test_table_without_id_column_uses_row_numbers_and_other_image_columns(pictures: Path):
    tsv = pictures / "seeds.tsv"
    tsv.write_text("caption\timage\nred one\timg/red.png\ngreen one\timg/green.png\n")
    assert [(s.id, s.caption) for s in read_seeds(tsv)] == [("0", "red one"), ("1", "green one")]

    laion = write_table(
        pictures / "laion.parquet",
        [{"URL": "img/green.png", "TEXT": "green", "id": 7, "width": 12}],
    )
    (seed,) = read_seeds(laion)
    assert (seed.id, seed.caption, seed.image) == (
        "7",
        "green",
        str(pictures / "img" / "green.png"),
    )

    paths = write_table(pictures / "paths.csv", [{"path": "img/red.png", "caption": "red"}])
    assert read_seeds(paths)[0].image == str(pictures / "img" / "red.png")


def test_duplicate_ids_are_an_error(pictures: Path):
    path = pictures / "dup.csv"
    path.write_text("id,url,caption\nx,img/red.png,one\ny,img/red.png,two\nx,img/green.png,three\n")
    with pytest.raises(ValueError, match="'x'"):
        read_seeds(path)


@pytest.mark.parametrize("read", [read_seeds, check_seeds], ids=["read", "check"])
def test_unknown_format_and_missing_file(tmp_path: Path, read):
    """check_seeds, run before anything starts, raises what reading would."""
    odd = tmp_path / "seeds.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"unknown seeds format.*seeds\.xlsx.*accepted"):
        read(odd)
    with pytest.raises(FileNotFoundError, match="nowhere.tsv"):
        read(tmp_path / "nowhere.tsv")
    one_column = tmp_path / "urls.txt"
    one_column.write_text("http://127.0.0.1/a.jpg\n")
    with pytest.raises(ValueError, match="caption"):
        read(one_column)
    no_caption = tmp_path / "no_caption.csv"
    no_caption.write_text("url,title\na.jpg,x\n")
    with pytest.raises(ValueError, match="caption column"):
        read(no_caption)


# ---------------------------------------------------------------- folders and tars


def test_folder_of_images_with_captions(tmp_path: Path):
    write_image(tmp_path / "b.png", solid(GREEN))
    (tmp_path / "b.txt").write_text("  a green\nsquare\n")
    write_image(tmp_path / "a.png", solid(RED))
    (tmp_path / "a.txt").write_text("a red square")
    write_image(tmp_path / "c.png", solid(BLUE))  # no caption file

    seeds = read_seeds(tmp_path)
    assert [(s.id, s.caption) for s in seeds] == [
        ("a", "a red square"),
        ("b", "a green square"),
        ("c", ""),
    ]
    assert seeds[2].error == "no caption file c.txt"
    results = load(seeds)
    assert_colour(results[0][1], RED)
    assert_colour(results[1][1], GREEN)
    assert results[2][1:] == (None, "no caption file c.txt")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds_tar(path: Path, samples: list[tuple[str, tuple[int, int, int], str]]) -> Path:
    """An img2dataset shard: KEY.png + KEY.txt + KEY.json per sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, color, caption in samples:
            add_member(tar, f"{key}.png", png_bytes(color))
            add_member(tar, f"{key}.txt", caption.encode())
            meta = {"key": key, "caption": caption, "url": f"http://example.invalid/{key}.jpg"}
            add_member(tar, f"{key}.json", json.dumps(meta).encode())
    return path


def test_webdataset_tar(tmp_path: Path):
    tar_path = write_wds_tar(
        tmp_path / "00000.tar", [("000000000", RED, "a red\nsquare"), ("000000001", GREEN, "green")]
    )
    with tarfile.open(tar_path, "a") as tar:  # a sample without json: the member name is the id
        add_member(tar, "extra.png", png_bytes(BLUE))
        add_member(tar, "extra.txt", b"blue")

    seeds = read_seeds(tar_path)
    assert [(s.id, s.caption) for s in seeds] == [
        ("000000000", "a red square"),
        ("000000001", "green"),
        ("extra", "blue"),
    ]
    assert seeds[0].image == f"tar://000000000.png::{tar_path}"
    results = load(seeds, workers=3)
    for (_, array, error), color in zip(results, [RED, GREEN, BLUE], strict=True):
        assert error is None
        assert_colour(array, color)


def test_brace_pattern_and_folder_of_tars(tmp_path: Path):
    shards = tmp_path / "shards"
    write_wds_tar(shards / "00000.tar", [("000000000", RED, "red"), ("000000001", GREEN, "green")])
    write_wds_tar(shards / "00001.tar", [("000010000", BLUE, "blue"), ("000010001", RED, "red 2")])
    (shards / "00000_stats.json").write_text("{}")  # img2dataset leaves these beside the tars

    seeds = read_seeds(str(shards / "{00000..00001}.tar"))
    assert [s.id for s in seeds] == ["000000000", "000000001", "000010000", "000010001"]
    assert seeds[2].image == f"tar://000010000.png::{shards / '00001.tar'}"
    assert read_seeds(shards) == seeds
    results = load(seeds, workers=4)
    for (_, array, _), color in zip(results, [RED, GREEN, BLUE, RED], strict=True):
        assert_colour(array, color)


# ---------------------------------------------------------------- loading


def test_local_file_url_and_bad_local_files(pictures: Path):
    garbage = pictures / "garbage.jpg"
    garbage.write_bytes(b"definitely not a jpeg")
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    truncated = truncate(write_image(pictures / "cut.png", noise))
    missing = str(pictures / "missing.png")
    seeds = [
        Seed("url", "red", (pictures / "img" / "red.png").as_uri()),
        Seed("missing", "nothing", missing),
        Seed("garbage", "garbage", str(garbage)),
        Seed("cut", "cut short", str(truncated)),
        Seed("member", "no such member", f"tar://nope.png::{pictures / 'none.tar'}"),
        Seed("known", "already failed", missing, error="missing caption"),
    ]
    results = load(seeds, workers=4)
    assert [r[0] for r in results] == list(range(len(seeds)))
    assert_colour(results[0][1], RED)
    errors = [error for _, _, error in results]
    assert errors[1] == f"no such file: {missing}"
    assert str(garbage) in errors[2] and "not a decodable image" in errors[2]
    assert str(truncated) in errors[3] and "not a decodable image" in errors[3]
    assert "none.tar" in errors[4]
    assert errors[5] == "missing caption"  # passed through, not loaded
    assert all(array is None for _, array, _ in results[1:])


def test_http_loading(http_root):
    (http_root.root / "red.png").write_bytes(png_bytes(RED))
    (http_root.root / "garbage.jpg").write_bytes(b"<html>not found, but 200</html>")
    urls = [http_root.url("red.png"), http_root.url("missing.png"), http_root.url("garbage.jpg")]
    results = load([Seed(str(i), "c", url) for i, url in enumerate(urls)], workers=2, timeout=5)

    assert_colour(results[0][1], RED)
    assert results[1][1:] == (None, f"HTTP 404 for {urls[1]}")
    assert results[2][1] is None
    assert urls[2] in results[2][2] and "not a decodable image" in results[2][2]


def test_order_is_kept_when_loads_finish_out_of_order(tmp_path: Path, monkeypatch):
    n = 24
    seeds = []
    for i in range(n):
        path = write_image(tmp_path / f"{i}.png", solid((10 * i,) * 3))
        seeds.append(Seed(str(i), f"grey {i}", str(path)))

    def slow_decode(data: bytes, size: int, **options) -> np.ndarray:
        array = decode_image(data, size, **options)
        time.sleep((n - array[0, 0, 0] // 10) * 0.004)  # early seeds finish last
        return array

    monkeypatch.setattr(seeds_module, "decode_image", slow_decode)
    results = load(seeds, workers=8)
    assert [index for index, _, _ in results] == list(range(n))
    for index, array, error in results:
        assert error is None
        assert_colour(array, (10 * index,) * 3)


def test_lookahead_is_bounded(pictures: Path):
    pulled = 0
    lock = threading.Lock()

    def counting() -> Iterator[Seed]:
        nonlocal pulled
        for i in range(200):
            with lock:
                pulled += 1
            yield Seed(str(i), "red", str(pictures / "img" / "red.png"))

    stream = load_seed_images(counting(), SIZE, workers=2)
    index, array, _ = next(stream)
    assert index == 0
    assert_colour(array, RED)
    assert pulled <= 4 * 2 + 1
    assert sum(1 for _ in stream) == 199


def test_check_seeds_leaves_large_inputs_and_folders_to_the_run(tmp_path: Path, monkeypatch):
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("image,caption\na.jpg,a dog\n")
    reads = []
    monkeypatch.setattr(seeds_module, "read_seeds", lambda p: reads.append(p))
    # past the size bound a file is only named and typed, not read: the run reads it once
    check_seeds(seeds, read_below=seeds.stat().st_size - 1)
    check_seeds(tmp_path)  # a folder: listing it is the run's job
    assert reads == []
    check_seeds(seeds)
    assert reads == [seeds]
