import numpy as np
import pytest

from eval.metrics import hit_at_k, hit_matrix, precision_at_k, ranking_metrics, recall_at_k


def test_single_query_by_hand():
    ranked, relevant = ["a", "b", "c", "d"], {"b", "d", "x"}
    assert precision_at_k(ranked, relevant, 2) == 0.5
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert hit_at_k(ranked, relevant, 1) == 0.0
    assert hit_at_k(ranked, relevant, 2) == 1.0
    assert precision_at_k(ranked, relevant, 4) == 0.5
    assert recall_at_k(ranked, relevant, 4) == pytest.approx(2 / 3)
    # a ranking shorter than k: missing positions are misses, precision still divides by k
    assert precision_at_k(ranked, relevant, 8) == 0.25


def test_matrix_metrics_equal_the_single_query_definitions():
    # rows: a=0, b=1, c=2, d=3, x=9
    ranked = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [5, 6, 7, -1]])
    relevant = [[1, 3, 9], [3], [0]]
    out = ranking_metrics(ranked, relevant, ks=[1, 2, 4])
    assert out["precision@2"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert out["recall@2"] == pytest.approx((1 / 3 + 1.0 + 0.0) / 3)
    assert out["hit@1"] == pytest.approx(1 / 3)
    for k in (1, 2, 4):
        for metric, fn in (("precision", precision_at_k), ("recall", recall_at_k), ("hit", hit_at_k)):
            expected = np.mean([fn(list(r), set(rel), k) for r, rel in zip(ranked, relevant)])
            assert out[f"{metric}@{k}"] == pytest.approx(expected)


def test_hit_matrix_ignores_padding_and_other_queries_relevant_items():
    ranked = np.array([[4, -1], [4, 2]])
    assert hit_matrix(ranked, [[2], [4]]).tolist() == [[False, False], [True, False]]


def test_k_beyond_the_ranking_and_empty_relevant_sets():
    out = ranking_metrics(np.array([[1, 2]]), [[2]], ks=[5])
    assert out == {"precision@5": pytest.approx(0.2), "recall@5": 1.0, "hit@5": 1.0}
    with pytest.raises(ValueError, match="relevant"):
        ranking_metrics(np.array([[1, 2]]), [[]], ks=[1])


def test_ndcg_by_hand():
    from eval.metrics import ndcg_at_k

    ranked = np.array([[5, 1, 7], [2, 3, 4]])
    # query 0: hit at rank 2 only, |R| = 2 -> (1/log2 3) / (1 + 1/log2 3); query 1: no hit
    expected0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert ndcg_at_k(ranked, [{1, 9}, {8}], 3) == pytest.approx(expected0 / 2)
    assert ndcg_at_k(np.array([[1, 2, 3]]), [{1, 2, 3, 4}], 3) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ndcg_at_k(ranked, [{1}, set()], 3)


def test_precision_per_query_averages_to_the_reported_precision():
    from eval.metrics import precision_per_query

    rng = np.random.default_rng(0)
    ranked = rng.integers(-1, 40, size=(25, 12))
    relevant = [set(rng.choice(40, size=rng.integers(1, 10), replace=False).tolist()) for _ in range(25)]
    per_query = precision_per_query(ranked, relevant, 10)
    assert per_query.shape == (25,) and per_query.max() <= 1
    assert per_query.mean() == pytest.approx(ranking_metrics(ranked, relevant, [10])["precision@10"])
    by_hand = [precision_at_k(r.tolist(), rel, 10) for r, rel in zip(ranked, relevant)]
    assert per_query.tolist() == pytest.approx(by_hand)


def test_bootstrap_interval_by_construction():
    from eval.metrics import bootstrap_ci

    assert bootstrap_ci(np.full(30, 0.2)) == pytest.approx((0.2, 0.2))
    x = np.r_[np.zeros(50), np.ones(50)]
    lo, hi = bootstrap_ci(x, seed=1)
    assert 0.38 < lo < 0.45 and 0.55 < hi < 0.62  # mean 0.5, standard error 0.05: about 0.5 -+ 0.098
    assert bootstrap_ci(x, seed=1) == (lo, hi)  # seeded
    assert bootstrap_ci(x, x) == pytest.approx((0.0, 0.0))  # paired: identical systems differ by nothing
    wide = bootstrap_ci(x[::10], seed=1)
    assert wide[1] - wide[0] > 2 * (hi - lo)  # 10 requests instead of 100: a much wider interval
