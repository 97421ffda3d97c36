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
