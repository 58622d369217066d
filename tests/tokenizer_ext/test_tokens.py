import numpy as np
import pytest

from common.registry import MODALITIES
from data_gen.catalog.track_split import split_tracks
from tokenizer_ext.token_db import TokenDB, assign_dedup, conflict_stats
from tokenizer_ext.tokens import (
    BEGIN_TOKEN,
    END_TOKEN,
    codes_to_tokens,
    music_token,
    music_vocabulary,
    parse_token,
    special_vocabulary,
    tokens_to_codes,
)


def test_token_strings_round_trip():
    assert music_token("sc", 1, 5) == "<SC1-5>"
    assert parse_token("<SC1-5>") == ("SC", 1, 5)
    assert parse_token("<TC-none>") == ("TC", None, None)
    assert parse_token("<ID-12>") == (None, None, 12)
    for bad in ("<XX1-2>", "<SC1->", "SC1-5", "<begin_3MToken>"):
        with pytest.raises((ValueError, KeyError)):
            parse_token(bad)


def test_default_vocabulary_is_2016_music_tokens():
    vocab = music_vocabulary({m.name: m.codebook_sizes for m in MODALITIES})
    assert len(vocab) == len(set(vocab)) == 2016
    assert vocab[0] == "<AC1-0>" and vocab[31] == "<AC1-31>" and vocab[32] == "<AC2-0>" and vocab[-1] == "<TC3-127>"
    assert special_vocabulary(["TC", "AC"], max_dedup=2) == [BEGIN_TOKEN, END_TOKEN, "<AC-none>", "<TC-none>",
                                                             "<ID-0>", "<ID-1>"]


def test_sequence_round_trip_with_missing_and_dedup():
    codes = {"BM": [1, 2, 3], "SC": [-1, -1, -1], "TC": [31, 63, 127]}
    toks = codes_to_tokens(codes, dedup=4)
    assert toks == [BEGIN_TOKEN, "<BM1-1>", "<BM2-2>", "<BM3-3>", "<SC-none>", "<TC1-31>", "<TC2-63>", "<TC3-127>",
                    "<ID-4>", END_TOKEN]
    assert tokens_to_codes(toks, {"BM": 3, "SC": 3, "TC": 3}) == (codes, 4)
    for bad in (["<BM2-2>", "<BM1-1>", "<BM3-3>"], ["<TC1-1>", "<TC2-1>", "<TC3-1>", "<BM1-1>", "<BM2-1>", "<BM3-1>"],
                ["<BM1-1>", "<BM2-2>"], ["<BM1-1>", "<BM2-1>", "<BM3-1>", "<ID-0>", "<ID-1>"]):
        with pytest.raises(ValueError):
            tokens_to_codes(bad, {"BM": 3, "TC": 3})


def test_dedup_and_conflict_stats_by_hand():
    rows = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4], [5, 6]])
    assert assign_dedup(rows).tolist() == [0, 1, 0, 2, 1, 0]
    stats = conflict_stats(rows)
    assert stats == {"tracks": 6, "cardinality": 3, "conflict_groups": 2, "tracks_in_conflict": 5,
                     "conflict_rate": 5 / 6, "max_group": 3}
    assert stats["tracks"] == stats["cardinality"] + stats["tracks_in_conflict"] - stats["conflict_groups"]


def test_token_db_save_load_and_disambiguation(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    codes = {"BM": rng.integers(0, 2, size=(n, 3)), "TC": rng.integers(0, 2, size=(n, 3))}
    codes["TC"][:10] = -1
    db = TokenDB([f"t{i}" for i in range(n)], {"BM": (32, 64, 128), "TC": (32, 64, 128)}, codes)
    assert db.conflict_stats()["conflict_rate"] > 0.5  # 2x2x2 codes per modality: many collisions
    unique = db.with_disambiguation()
    assert unique.conflict_stats()["conflict_rate"] == 0.0
    unique.save(tmp_path)
    back = TokenDB.load(tmp_path)
    assert back.track_ids == db.track_ids and back.modalities == ("BM", "TC")
    for m in ("BM", "TC"):
        np.testing.assert_array_equal(back.codes[m], codes[m])
    np.testing.assert_array_equal(back.dedup, unique.dedup)
    assert back.tokens(0)[4] == "<TC-none>" and back.tokens(0)[-2].startswith("<ID-")
    vocab = (tmp_path / "vocabulary.txt").read_text().split()
    assert len(vocab) == 2 * 224 + 2 + 2 + int(unique.dedup.max()) + 1
    with pytest.raises(ValueError, match="out of codebook range"):
        TokenDB(["a"], {"BM": (2, 2, 2)}, {"BM": np.array([[0, 2, 0]])})
    with pytest.raises(ValueError, match="partially missing"):
        TokenDB(["a"], {"BM": (2, 2, 2)}, {"BM": np.array([[-1, 1, 0]])})


def test_track_split_is_stable_and_near_the_fraction():
    ids = [f"track-{i}" for i in range(10000)]
    mask = split_tracks(ids, 0.2, seed=0)
    assert 0.18 < mask.mean() < 0.22
    # order-independent and stable when tracks are added
    assert split_tracks(ids[::-1], 0.2, 0)[::-1].tolist() == mask.tolist()
    assert split_tracks(ids + ["new"], 0.2, 0)[:-1].tolist() == mask.tolist()
    assert split_tracks(ids, 0.2, seed=1).tolist() != mask.tolist()
