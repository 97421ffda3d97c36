import numpy as np

from miners.embedders import normalize
from miners.index import SeedIndex


def test_range_search_returns_exactly_the_pairs_at_or_above_threshold(tmp_path):
    rng = np.random.default_rng(0)
    seeds = normalize(rng.normal(size=(50, 16)))
    frames = normalize(rng.normal(size=(40, 16)))
    frames[7] = seeds[3]  # an exact match
    index = SeedIndex(seeds)
    rows, cols, sims = index.search(frames, 0.3)
    expected = {(i, j) for i, j in zip(*np.nonzero(frames @ seeds.T >= 0.3), strict=True)}
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected
    assert (7, 3) in expected
    np.testing.assert_allclose(sims, (frames @ seeds.T)[rows, cols], atol=1e-5)


def test_threshold_itself_counts():
    seeds = normalize(np.eye(4)[:2])
    q = normalize(np.array([[0.6, 0.8, 0, 0]]))
    rows, cols, _ = SeedIndex(seeds).search(q, float(np.float32(0.8)))
    assert cols.tolist() == [1]


def test_save_and_load_round_trip(tmp_path):
    seeds = normalize(np.random.default_rng(1).normal(size=(5, 8)))
    SeedIndex(seeds).save(tmp_path)
    assert (tmp_path / "seeds.index").exists() and not list(tmp_path.glob(".*tmp"))
    loaded = SeedIndex.load(tmp_path)
    np.testing.assert_array_equal(loaded.embeddings, seeds)
    assert loaded.search(seeds[[2]], 0.99)[1].tolist() == [2]


def test_empty_queries_and_width_mismatch():
    index = SeedIndex(normalize(np.ones((3, 4))))
    assert len(index.search(np.zeros((0, 4)), 0.5)[0]) == 0
    import pytest

    with pytest.raises(ValueError, match="width"):
        index.search(np.ones((1, 5)), 0.5)


def clustered(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``centres`` random directions, like CLIP embeddings of similar images."""
    rng = np.random.default_rng(seed)
    c = normalize(rng.normal(size=(centres, dim)))
    return normalize(
        c[rng.integers(0, centres, n)] + rng.normal(scale=0.6 / dim**0.5, size=(n, dim))
    )


def pairs(result) -> set[tuple[int, int]]:
    return set(zip(result[0].tolist(), result[1].tolist(), strict=True))


def test_ivf_finds_the_flat_pairs_of_seed_copies():
    seeds = clustered(20_000, 64, 200)
    rng = np.random.default_rng(1)
    picked = rng.choice(len(seeds), 300, replace=False)
    queries = normalize(seeds[picked] + rng.normal(scale=0.1 / 8, size=(300, 64)))
    flat, ivf = SeedIndex(seeds, kind="flat"), SeedIndex(seeds, kind="ivf")
    assert flat.kind == "flat" and ivf.kind == "ivf"
    assert ivf.nlist == 512 and ivf.nprobe == 8  # 20000 // 39 (below 4·sqrt N); at least 8
    want, got = pairs(flat.search(queries, 0.8)), pairs(ivf.search(queries, 0.8))
    assert len(want) > 2000  # neighbours in the cluster count too, not only the copied seed
    assert got <= want and len(got) / len(want) >= 0.99
    assert {(i, int(j)) for i, j in enumerate(picked)} <= got
    ivf.nprobe = 1  # one list per query: pairs across a list boundary are missed
    assert len(pairs(ivf.search(queries, 0.8))) / len(want) < 0.9


def test_exact_copies_score_the_same_on_both_kinds():
    seeds = clustered(5_000, 32, 50)
    q = seeds[[10, 20, 30]]
    sims = []
    for kind in ("flat", "ivf"):
        rows, cols, s = SeedIndex(seeds, kind=kind).search(q, 0.999)
        hit = {(int(r), int(c)): float(v) for r, c, v in zip(rows, cols, s, strict=True)}
        sims.append([hit[(0, 10)], hit[(1, 20)], hit[(2, 30)]])
    np.testing.assert_array_equal(sims[0], sims[1])
    # a threshold equal to a pair's float32 score keeps it on both kinds
    t = float(np.float32(sims[0][0]))
    for kind in ("flat", "ivf"):
        assert (0, 10) in pairs(SeedIndex(seeds, kind=kind).search(q[:1], t))


def test_ivf_save_and_load_keeps_kind_and_nprobe_without_retraining(tmp_path, monkeypatch):
    seeds = clustered(4_000, 16, 40)
    index = SeedIndex(seeds, kind="ivf", nlist=50, nprobe=3)
    index.nprobe = 7
    index.save(tmp_path)
    assert not list(tmp_path.glob(".*tmp"))
    import faiss

    def no_training(*a, **k):
        raise AssertionError("load retrained")

    monkeypatch.setattr(faiss.IndexIVFFlat, "train", no_training)
    loaded = SeedIndex.load(tmp_path)
    assert (loaded.kind, loaded.nlist, loaded.nprobe, len(loaded)) == ("ivf", 50, 7, 4_000)
    q = seeds[:50]
    assert pairs(loaded.search(q, 0.8)) == pairs(index.search(q, 0.8))
    np.testing.assert_array_equal(loaded.search_knn(q, 5)[1], index.search_knn(q, 5)[1])


def test_flat_save_writes_its_kind_and_old_outputs_still_load(tmp_path):
    seeds = normalize(np.random.default_rng(2).normal(size=(20, 8)))
    SeedIndex(seeds).save(tmp_path)
    import json

    params = json.loads((tmp_path / "seeds.index.json").read_text())
    assert params == {"kind": "flat", "ntotal": 20, "dim": 8, "nlist": None, "nprobe": None}
    (tmp_path / "seeds.index.json").unlink()  # as written before IVF existed
    assert SeedIndex.load(tmp_path).kind == "flat"


def test_load_refuses_an_index_from_another_run(tmp_path):
    import pytest

    SeedIndex(normalize(np.ones((3, 4)))).save(tmp_path)
    np.save(tmp_path / "seeds.npy", normalize(np.ones((5, 4))).astype(np.float32))
    with pytest.raises(ValueError, match="different runs"):
        SeedIndex.load(tmp_path)


def test_auto_is_flat_for_small_n_and_small_ivf_lowers_nlist():
    import pytest

    seeds = clustered(500, 8, 5)
    assert SeedIndex(seeds).kind == "flat" and SeedIndex(seeds).nprobe is None
    small = SeedIndex(seeds, kind="ivf", nlist=1000)
    assert small.nlist == 500 // 39 and small.nprobe == 8  # 12 lists; nprobe at least 8
    assert pairs(small.search(seeds[:5], 0.99)) >= {(i, i) for i in range(5)}
    tiny = SeedIndex(seeds[:3], kind="ivf")
    assert tiny.nlist == 1 and tiny.search(seeds[:1], 0.99)[1].tolist() == [0]
    assert SeedIndex(np.zeros((0, 8)), kind="ivf").kind == "flat"
    with pytest.raises(ValueError, match="kind"):
        SeedIndex(seeds, kind="hnsw")
    with pytest.raises(ValueError, match="nprobe"):
        SeedIndex(seeds).nprobe = 4


def test_search_knn_best_first_and_padded():
    seeds = normalize(np.random.default_rng(3).normal(size=(6, 8)))
    sims, rows = SeedIndex(seeds).search_knn(seeds[[4]], 8)
    assert rows[0, 0] == 4 and rows[0, -1] == -1 and np.isneginf(sims[0, -1])
    assert np.all(np.diff(sims[0, :6]) <= 0)
