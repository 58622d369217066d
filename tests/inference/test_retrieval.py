"""Ranking generated beams: hierarchical matching (3MTokenRec) and the beams' own tracks first."""

import numpy as np
import pytest

from inference.retrieval import Retriever, lead_group_first
from tests.inference.test_decoding import _db


def test_beams_ranking_puts_the_beams_own_tracks_first_in_beam_order():
    db = _db(n=200)
    retriever = Retriever(db)
    rows = [57, 3, 121, 57]  # a repeated beam counts once
    beams = [db.tokens(r) for r in rows]
    logprobs = [-0.1, -2.0, -3.0, -4.0]
    res = retriever.retrieve(beams, logprobs, k=10, ranking="beams")
    assert res.rows[:3].tolist() == [57, 3, 121]
    assert len(res.rows) == 10 and len(set(res.rows.tolist())) == 10
    match = retriever.retrieve(beams, logprobs, k=10, ranking="match")
    assert match.rows[0] == 57  # the top beam's own track has every prefix of the top beam
    assert set(res.rows[3:]) <= set(retriever.retrieve(beams, logprobs, k=40, ranking="match").rows)
    # ten beams of distinct tracks give ten distinct tracks, exactly those
    ten = [db.tokens(r) for r in range(30, 40)]
    assert retriever.retrieve(ten, list(-np.arange(10.0)), k=10, ranking="beams").rows.tolist() == list(range(30, 40))
    with pytest.raises(ValueError):
        retriever.retrieve(beams, logprobs, ranking="best")


def test_exact_row_resolves_disambiguated_ids():
    db = _db(n=100)
    retriever = Retriever(db)
    for row in (0, 10, 55):  # rows 0..9 share codes with rows 10..19 and differ by <ID-k>
        codes = {m: db.codes[m][row].tolist() for m in db.modalities}
        assert retriever.exact_row(codes, int(db.dedup[row])) == row


def test_beam_temperature_moves_from_the_top_beam_to_a_vote_of_the_beams():
    db = _db(n=200)
    retriever = Retriever(db)
    # one beam on track 57 against three beams on track 121: the top beam wins when sharp, the majority when flat
    beams = [db.tokens(r) for r in (57, 121, 121, 121)]
    logprobs = [-0.1, -1.0, -1.0, -1.0]
    sharp = retriever.retrieve(beams, logprobs, k=5, beam_temperature=0.01)
    flat = retriever.retrieve(beams, logprobs, k=5, beam_temperature=float("inf"))
    assert sharp.rows[0] == 57 and flat.rows[0] == 121
    default = retriever.retrieve(beams, logprobs, k=5)
    assert default.rows[0] == 121  # T = 1: exp(-0.1) < 3 exp(-1.0), the three beams outweigh the top one
    only_top = retriever.retrieve(beams[:1], logprobs[:1], k=5)
    assert sharp.rows.tolist() == only_top.rows.tolist()


def test_lead_group_first_puts_the_top_tracks_artist_in_front():
    group_of = np.array([0, 1, 0, 2, 1, 1, -1, 0])  # rows' artists; row 6 has none
    # the lead artist (1) keeps its ranked order (4, 1), then its unranked track 5; then the rest in ranked order
    assert lead_group_first([4, 0, 1, 3, -1], group_of, k=10).tolist() == [4, 1, 5, 0, 3]
    # unranked tracks of the lead artist come in fill_order, and the answer stops at k
    assert lead_group_first([2, 3], group_of, k=3, fill_order=np.array([7, 6, 5, 4, 3, 2, 1, 0])).tolist() \
        == [2, 7, 0]
    # a lead track with no artist leaves the ranking as it was (cut at k); an empty ranking stays empty
    assert lead_group_first([6, 1, 4], group_of, k=2).tolist() == [6, 1]
    assert lead_group_first([-1, -1], group_of, k=5).tolist() == []
