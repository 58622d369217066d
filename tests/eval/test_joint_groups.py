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


def test_t2mr_weights_given_per_modality_keep_joint_groups_at_one(tmp_path):
    from eval.t2mr import parse_weights as t2mr_weights

    assert t2mr_weights("x:BM=4,SC=1", ("FU",)) == ("x", {"FU": 1.0})  # FusID's one fused group is not zeroed
    assert t2mr_weights("x:BM=4", ("SH", "BM", "TC")) == ("x", {"SH": 1.0, "BM": 4.0, "TC": 0.0})
    assert t2mr_weights("x:FU=0", ("FU",))[1] == {"FU": 0.0}
    saved = tmp_path / "weights.json"  # a --tune_weights file of a per-modality tokenizer, applied to FusID
    saved.write_text('{"label": "tuned", "weights": {"BM": 4.0, "ST": 0.0}}')
    assert t2mr_weights(str(saved), ("FU",)) == ("tuned", {"FU": 1.0})
    assert t2mr_weights(str(saved), ("BM", "ST", "MC")) == ("tuned", {"BM": 4.0, "ST": 0.0, "MC": 0.0})
