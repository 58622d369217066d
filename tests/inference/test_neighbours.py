"""Content-neighbour ranking: generated codes decoded through the catalog into content, tracks ranked by cosine."""

import numpy as np
import pytest

from inference.matching import HierarchicalIndex
from inference.neighbours import ContentSpace, unit_rows
from inference.retrieval import Retriever
from tests.eval.helpers import write_store
from tokenizer_ext.token_db import TokenDB

# Six tracks, one modality of two levels. Rows 0 and 1 share the level-1 code 0 but their content is far apart;
# row 2 has level-1 code 1 and the content of row 0. Rows 3-5 fill the catalog.
CODES = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]], np.int32)
CONTENT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.98, 0.05, 0.0], [0.0, 0.0, 1.0], [0.0, 0.7, 0.7],
                    [0.3, 0.3, 0.3]], np.float32)


def _space(db: TokenDB, content: np.ndarray = CONTENT) -> ContentSpace:
    return ContentSpace({"BM": content / np.linalg.norm(content, axis=1, keepdims=True)})


def _db() -> TokenDB:
    return TokenDB([f"t{i}" for i in range(len(CODES))], {"BM": (3, 2)}, {"BM": CODES.copy()})


def test_unit_rows_standardise_the_present_rows_and_zero_the_absent_ones():
    x = np.array([[1.0, 100.0], [3.0, 300.0], [2.0, 500.0], [9.0, 9.0]], np.float32)
    present = np.array([True, True, True, False])
    out = unit_rows(x, present)
    assert np.allclose(np.linalg.norm(out[:3], axis=1), 1.0) and not out[3].any()
    # each dimension is centred over the present rows, so the large second column does not dominate
    z = (x[:3] - x[:3].mean(0)) / x[:3].std(0)
    assert np.allclose(out[:3], z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-6)


def test_decode_takes_the_deepest_prefix_that_a_track_has():
    db = _db()
    index, space = HierarchicalIndex.from_token_db(db), _space(db)
    # the whole ID of row 1: its own vector
    assert np.allclose(space.decode(index, {"BM": [0, 1]})["BM"], space.vectors["BM"][1])
    # level 2 of prefix 3 does not exist (codebook 3 x 2, code 2 unused): back off to level 1, rows 4 and 5
    codes = CODES.copy()
    codes[5] = [0, 0]
    db2 = TokenDB(db.track_ids, {"BM": (3, 2)}, {"BM": codes})
    decoded = space.decode(HierarchicalIndex.from_token_db(db2), {"BM": [2, 1]})["BM"]
    assert np.allclose(decoded, space.vectors["BM"][4])  # only row 4 keeps level-1 code 2
    assert space.decode(index, {"BM": [0, 1]}, weights={"BM": 0.0}) == {}  # a weight of 0 decodes nothing
    assert space.decode(index, {"BM": [-1, -1]}) == {}  # a missing modality decodes nothing


def test_neighbours_reach_content_across_level1_codes_where_matching_cannot():
    db = _db()
    beams, logprobs = [db.tokens(0)], [0.0]
    match = Retriever(db).retrieve(beams, logprobs, k=3, ranking="match")
    near = Retriever(db, content=_space(db)).retrieve(beams, logprobs, k=3, ranking="neighbours")
    assert match.rows[:2].tolist() == [0, 1]  # matching: the track sharing the level-1 code, far in content
    assert near.rows[:2].tolist() == [0, 2]  # neighbours: the track with the same content, other level-1 code
    assert near.scores[0] == pytest.approx(1.0) and near.scores[1] > 0.99
    # two beams merge by probability: a confident second beam on row 3 pulls row 3 above row 2
    both = Retriever(db, content=_space(db)).retrieve([db.tokens(0), db.tokens(3)], [0.0, 2.0], k=2,
                                                      ranking="neighbours")
    assert both.rows.tolist() == [3, 4]
    with pytest.raises(ValueError, match="needs content vectors"):
        Retriever(db).retrieve(beams, logprobs, ranking="neighbours")


def test_content_space_from_run_follows_the_token_db_order(tmp_path):
    db = _db()
    order = [5, 3, 1, 0, 2, 4]  # the embedding store lists the tracks in another order
    present = np.array([True] * 5 + [False])
    write_store(tmp_path, [db.track_ids[i] for i in order], {"BM": (CONTENT[order], present)})
    space = ContentSpace.from_run(tmp_path, db.track_ids, ["BM"])
    expected = unit_rows(CONTENT[order], present)
    for store_row, db_row in enumerate(order):
        assert np.allclose(space.vectors["BM"][db_row], expected[store_row])
    assert not space.vectors["BM"][order[5]].any()  # absent in the store: zero, so it scores 0
    with pytest.raises(ValueError, match="not in the embedding store"):
        ContentSpace.from_run(tmp_path, [*db.track_ids, "other"], ["BM"])


def test_a_joint_group_decodes_into_every_input_modality_it_stands_for():
    from inference.neighbours import content_modalities

    db = TokenDB([f"t{i}" for i in range(len(CODES))], {"FU": (3, 2)}, {"FU": CODES.copy()}, tokenizer="fusid",
                 meta={"input_modalities": ["BM", "SC"]})
    assert content_modalities(db) == ("BM", "SC")
    sc = CONTENT[:, ::-1].copy()
    space = ContentSpace({"BM": unit_rows(CONTENT, np.ones(6, bool)), "SC": unit_rows(sc, np.ones(6, bool))})
    decoded = space.decode(HierarchicalIndex.from_token_db(db), {"FU": [1, 0]})
    assert set(decoded) == {"BM", "SC"}
    assert np.allclose(decoded["BM"], space.vectors["BM"][2]) and np.allclose(decoded["SC"], space.vectors["SC"][2])
    near = Retriever(db, content=space).retrieve([db.tokens(2)], [0.0], k=1, ranking="neighbours",
                                                 weights={"BM": 1.0, "SC": 0.0})
    assert near.rows.tolist() == [2]
    with pytest.raises(ValueError, match="no input_modalities"):
        content_modalities(TokenDB(db.track_ids, db.codebook_sizes, db.codes, tokenizer="fusid"))
