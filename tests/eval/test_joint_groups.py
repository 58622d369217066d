"""Joint code groups (SH, FU, ...) in hierarchical matching and CBR weights: default weight 1.0 when weights are
given per modality, 0 where a CBR row leaves them out."""

import numpy as np

from eval.cbr import parse_weights
from inference.matching import HierarchicalIndex, brute_force_scores
from tokenizer_ext.token_db import TokenDB


def _db():
    codes = {"SH": np.array([[0, 1], [0, 1], [0, 2], [1, 0]], np.int32),
             "BM": np.array([[3], [3], [-1], [3]], np.int32)}
    return TokenDB(["a", "b", "c", "d"], {"SH": (2, 3), "BM": (4,)}, codes, tokenizer="musicrec")


def test_joint_groups_are_indexed_first_and_weigh_one_by_default():
    db = _db()
    index = HierarchicalIndex.from_token_db(db)
    assert index.modalities == ("SH", "BM")
    scores = index.score_rows([0], None)[0]
    assert scores.tolist() == [3.0, 3.0, 1.0, 1.0]
    assert np.array_equal(scores, brute_force_scores(db, 0))
    # weights by modality only: SH keeps 1.0, an unlisted modality would get 0
    assert index.score_rows([0], {"BM": 2.0})[0].tolist() == [4.0, 4.0, 1.0, 2.0]
    assert index.score_rows([0], {"BM": 1.0, "SH": 0.0})[0].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert index.score_codes({"SH": [0, 1], "BM": [3]}).tolist() == [3.0, 3.0, 1.0, 1.0]


def test_cbr_weights_accept_joint_groups():
    assert parse_weights("SH=2,BM=0.5", ("SH", "BM", "TC")) == {"SH": 2.0, "BM": 0.5, "TC": 1.0}
