import numpy as np
import pytest

from inference import matching
from inference.matching import HierarchicalIndex, brute_force_scores, top_k
from tests.eval.helpers import random_db
from tokenizer_ext.token_db import TokenDB


def reference_ranking(scores: np.ndarray, k: int, exclude=()) -> list[int]:
    """Higher score first, then lower row; written plainly."""
    rows = [t for t in range(len(scores)) if t not in set(exclude)]
    return sorted(rows, key=lambda t: (-scores[t], t))[:k]


def test_index_has_one_column_per_prefix_and_nothing_for_missing_rows():
    db = TokenDB(["a", "b", "c"], {"SC": (2, 2), "TC": (3,)},
                 {"SC": np.array([[0, 1], [0, 0], [-1, -1]]), "TC": np.array([[2], [2], [1]])})
    index = HierarchicalIndex.from_token_db(db)
    # SC level 1: {0}; SC level 2: {(0,0), (0,1)}; TC level 1: {1, 2}
    assert index.X.shape == (3, 5)
    assert index.X.getnnz(axis=1).tolist() == [3, 3, 1]
    assert [(b.modality, b.level, len(b.keys)) for b in index.blocks] == [("SC", 1, 1), ("SC", 2, 2), ("TC", 1, 2)]
    # a vs a: SC 1+2, TC 1; a vs b: SC level 1 and TC; a vs c: SC missing in c, TC 2 != 1
    np.testing.assert_array_equal(index.score_rows([0]), [[3.0, 2.0, 0.0]])


def test_score_rows_equals_brute_force_with_random_weights():
    db = random_db(n=150, seed=1)
    index = HierarchicalIndex.from_token_db(db)
    rng = np.random.default_rng(2)
    queries = rng.choice(db.num_tracks, 25, replace=False)
    for trial in range(3):
        weights = {m: float(rng.uniform(0.1, 3.0)) for m in db.modalities}
        if trial == 2:
            weights["BM"] = 0.0
        scores = index.score_rows(queries, weights)
        for i, q in enumerate(queries):
            np.testing.assert_allclose(scores[i], brute_force_scores(db, q, weights), rtol=1e-12, atol=1e-12)


def test_hierarchy_level2_counts_only_after_level1():
    # same level-2 and level-3 codes but a different level-1 code: no match at all
    db = TokenDB(["q", "x", "y"], {"BM": (4, 4, 4)}, {"BM": np.array([[0, 1, 2], [3, 1, 2], [0, 1, 3]])})
    index = HierarchicalIndex.from_token_db(db)
    assert index.score_rows([0])[0].tolist() == [3.0, 0.0, 2.0]
    assert brute_force_scores(db, 0).tolist() == [3.0, 0.0, 2.0]


@pytest.mark.parametrize("weights", [None, {"BM": 1.0, "SC": 2.0, "TC": 3.0},  # whole numbers: integer path
                                     {"BM": 0.5, "SC": 1.25, "TC": 0.75}])  # dyadic: exact float sums
def test_rank_rows_equals_reference_ranking(weights):
    db = random_db(n=120, seed=3)
    index = HierarchicalIndex.from_token_db(db)
    queries = np.arange(0, 120, 7)
    ranked = index.rank_rows(queries, weights, k=15, chunk_size=4)
    assert ranked.shape == (len(queries), 15)
    for i, q in enumerate(queries):
        assert ranked[i].tolist() == reference_ranking(brute_force_scores(db, q, weights), 15, exclude=[q])
    # chunking does not change anything
    np.testing.assert_array_equal(ranked, index.rank_rows(queries, weights, k=15))


def test_integer_and_general_top_k_agree():
    db = random_db(n=300, seed=4)
    index = HierarchicalIndex.from_token_db(db)
    scores = index.score_rows(np.arange(40))
    assert index.integer_scores(None) and not index.integer_scores({"BM": 0.5})
    np.testing.assert_array_equal(top_k(scores, 25, integer_scores=True), top_k(scores, 25))


def test_top_k_by_hand():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert top_k(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert top_k(scores, 4).tolist() == [[1, 2, 4, 0], [0, 1, 2, 3]]
    assert top_k(scores, 9).tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4]]
    assert top_k(scores, 4, integer_scores=True).tolist() == [[1, 2, 4, 0], [0, 1, 2, 3]]


def test_ties_break_to_lower_row_and_seed_is_excluded():
    db = TokenDB([f"t{i}" for i in range(6)], {"SC": (2, 2)}, {"SC": np.zeros((6, 2), np.int32)})
    index = HierarchicalIndex.from_token_db(db)
    assert index.rank_rows([3, 0], k=3).tolist() == [[0, 1, 2], [1, 2, 3]]
    rows, scores = index.search_codes({"SC": [0, 0]}, k=4, exclude=[1, 2])
    assert rows.tolist() == [0, 3, 4, 5] and scores.tolist() == [2.0] * 4
    # the same call twice gives the same answer
    assert index.search_codes({"SC": [0, 0]}, k=4, exclude=[1, 2])[0].tolist() == rows.tolist()


def test_search_codes_equals_brute_force():
    db = random_db(n=150, seed=5)
    index = HierarchicalIndex.from_token_db(db)
    rng = np.random.default_rng(6)
    weights = {"BM": 0.7, "SC": 1.9, "TC": 0.4, "AC": 5.0}  # AC is not indexed: ignored
    for q in rng.choice(db.num_tracks, 20, replace=False):
        codes = {m: db.codes[m][q].tolist() for m in db.modalities}
        reference = brute_force_scores(db, q, weights)
        np.testing.assert_allclose(index.score_codes(codes, weights), reference, rtol=1e-12, atol=1e-12)
        rows, scores = index.search_codes(codes, weights, k=10, exclude=[q])
        expected = reference_ranking(reference, 10, exclude=[q])
        assert rows.tolist() == expected
        np.testing.assert_allclose(scores, reference[expected], rtol=1e-12)


def test_search_codes_for_unseen_prefixes_and_missing_modalities():
    db = TokenDB(["a", "b", "c"], {"BM": (4, 4), "SC": (4,)},
                 {"BM": np.array([[0, 1], [0, 2], [1, 1]]), "SC": np.array([[3], [3], [-1]])})
    index = HierarchicalIndex.from_token_db(db)
    # BM (0, 3): level 1 shared by a and b, level 2 by no track; SC missing in the query
    assert index.score_codes({"BM": [0, 3], "SC": [-1]}).tolist() == [1.0, 1.0, 0.0]
    # BM (2, 1): level 1 matches nothing, so level 2 (shared with a and c) must not count either
    assert index.score_codes({"BM": [2, 1]}).tolist() == [0.0, 0.0, 0.0]
    assert index.score_codes({"SC": [3]}, {"SC": 2.5}).tolist() == [2.5, 2.5, 0.0]
    with pytest.raises(ValueError, match="outside codebook"):
        index.score_codes({"BM": [4, 0]})


def test_index_over_a_subset_of_modalities_equals_zero_weights():
    db = random_db(n=80, seed=7)
    only_sc = HierarchicalIndex.from_token_db(db, ["SC"])
    full = HierarchicalIndex.from_token_db(db)
    assert only_sc.modalities == ("SC",)
    np.testing.assert_array_equal(only_sc.score_rows(np.arange(10)),
                                  full.score_rows(np.arange(10), {"SC": 1.0}))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_search_equals_scoring_every_track(seed, monkeypatch):
    """The pruned path of search_codes returns the same rows and floats as the dense one and as brute force."""
    rng = np.random.default_rng(seed)
    db = random_db(n=400, sizes={"BM": (4, 3, 5), "SC": (3, 4), "TC": (5, 2, 3), "ST": (2, 2, 2)}, missing=0.15,
                   seed=seed)
    pruned, dense = HierarchicalIndex.from_token_db(db), HierarchicalIndex.from_token_db(db)
    pruned.min_tracks_for_pruning, dense.min_tracks_for_pruning = 0, 10**9
    monkeypatch.setattr(matching, "PRUNE_MAX_CANDIDATE_SHARE", 1.0)  # never give up for loose bounds here
    answered = []
    search_pruned = HierarchicalIndex._search_pruned
    monkeypatch.setattr(HierarchicalIndex, "_search_pruned",
                        lambda self, *a: answered.append(search_pruned(self, *a)) or answered[-1])
    weightings = [lambda: None,  # equal
                  lambda: {m: float(rng.integers(0, 4)) for m in db.modalities},  # whole numbers (0 = ignored)
                  lambda: {m: float(rng.choice([0.5, 1.3, 2.0])) for m in db.modalities},
                  lambda: {m: float(rng.uniform(0.05, 3.0)) for m in db.modalities}]
    for trial in range(40):
        weights = weightings[trial % 4]()
        q = int(rng.integers(db.num_tracks))
        if trial % 2:  # each modality from another track: prefixes exist, but rarely together
            codes = {m: db.codes[m][int(rng.integers(db.num_tracks))].tolist() for m in db.modalities}
        else:
            codes = {m: db.codes[m][q].tolist() for m in db.modalities}
        exclude = rng.choice(db.num_tracks, int(rng.integers(0, 5)), replace=False)
        k = int(rng.choice([1, 10, 37]))
        rows, scores = pruned.search_codes(codes, weights, k=k, exclude=exclude)
        rows_d, scores_d = dense.search_codes(codes, weights, k=k, exclude=exclude)
        assert rows.tolist() == rows_d.tolist()
        assert scores.tobytes() == scores_d.tobytes()
        if trial % 2 == 0:
            reference = brute_force_scores(db, q, weights)
            assert rows.tolist() == reference_ranking(reference, k, exclude=exclude)
    assert sum(a is not None for a in answered) >= 36  # the pruned path answered, not the dense fallback


def test_pruned_search_leaves_negative_weights_to_the_dense_path():
    db = random_db(n=300, seed=9)
    index = HierarchicalIndex.from_token_db(db)
    index.min_tracks_for_pruning = 0
    codes = {m: db.codes[m][5].tolist() for m in db.modalities}
    weights = {"BM": 1.0, "SC": -2.0, "TC": 0.5}
    rows, _ = index.search_codes(codes, weights, k=12)
    assert rows.tolist() == reference_ranking(brute_force_scores(db, 5, weights), 12)
