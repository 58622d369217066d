import math

import numpy as np
import pytest
import torch

from eval.baselines import (
    ArtistTrackNameRetriever,
    BM25Retriever,
    DenseRetriever,
    parse_song_lines,
    tokenize,
    track_text,
)

CATALOG = [
    {"title": "Bohemian Rhapsody", "artist": "Queen", "album": "A Night at the Opera", "tags": ["rock"]},
    {"title": "Smells Like Teen Spirit", "artist": "Nirvana", "album": "Nevermind", "tags": ["grunge", "rock"]},
    {"title": "Don't Stop Me Now - Remastered 2011", "artist": "Queen", "album": "Jazz", "tags": None,
     "genre": "rock"},
    {"title": "Bohemian Rhapsody - Live", "artist": "Queen", "album": "Live Killers", "tags": ["rock"]},
    {"title": "Blinding Lights", "artist": "The Weeknd", "album": "After Hours", "tags": ["synthpop"]},
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_track_text_and_tokenizer():
    assert track_text(CATALOG[2]) == "Don't Stop Me Now - Remastered 2011 by Queen, from the album Jazz. Tags: rock"
    assert tokenize("Rock & Roll (2019 Remix)") == ["rock", "roll", "2019", "remix"]


def test_bm25_scores_by_hand():
    # 3 texts, avgdl = (2 + 3 + 1) / 3 = 2; df(a) = 2, df(c) = 1
    bm25 = BM25Retriever(k1=1.2, b=0.75).fit(texts=["a b", "a c c", "d"])
    idf_a, idf_c = math.log(1 + 1.5 / 2.5), math.log(1 + 2.5 / 1.5)
    # text 0: |d| = avgdl, so the length norm is 1.2 and tf = 1 gives 2.2 / 2.2
    # text 1: |d| = 3, norm = 1.2 * (0.25 + 0.75 * 1.5) = 1.65; a: 2.2 / 2.65, c (tf 2): 4.4 / 3.65
    expected = [idf_a * 1.0, idf_a * 2.2 / 2.65 + idf_c * 4.4 / 3.65, 0.0]
    np.testing.assert_allclose(bm25.scores(["a c"])[0], expected, rtol=1e-12)
    np.testing.assert_allclose(expected, [0.4700036292, 1.5725612027, 0.0], rtol=1e-9)
    # a repeated query token counts twice; unknown tokens count nothing
    np.testing.assert_allclose(bm25.scores(["a a zzz"])[0], [2 * idf_a, 2 * idf_a * 2.2 / 2.65, 0.0], rtol=1e-12)
    assert bm25.rank(["a c", "c"], k=3).tolist() == [[1, 0, 2], [1, 0, 2]]


def test_bm25_ties_go_to_the_lower_row_and_ranking_is_deterministic():
    texts = ["love song", "other", "love song", "love song", "nothing here"]
    bm25 = BM25Retriever().fit(texts=texts)
    assert bm25.rank(["love"], k=4).tolist() == [[0, 2, 3, 1]]  # three equal scores, then zeros by row
    assert bm25.rank(["no such words"], k=3).tolist() == [[0, 1, 2]]
    assert bm25.rank(["love"], k=9).tolist() == [[0, 2, 3, 1, 4, -1, -1, -1, -1]]  # fewer tracks than k
    again = BM25Retriever().fit(texts=texts)
    np.testing.assert_array_equal(again.rank(["love", "song other"], k=5), bm25.rank(["love", "song other"], k=5))


def test_bm25_over_a_catalog():
    bm25 = BM25Retriever().fit(CATALOG)
    assert bm25.rank(["grunge"], k=1).tolist() == [[1]]
    assert sorted(bm25.rank(["queen bohemian rhapsody"], k=2)[0].tolist()) == [0, 3]


def test_dense_retriever_ranks_the_named_track_first_and_caches(tmp_path):
    dense = DenseRetriever(cache_dir=tmp_path).fit(CATALOG)
    ranked = dense.rank(["Blinding Lights", "Smells Like Teen Spirit", "Don't Stop Me Now"], k=3)
    assert ranked.shape == (3, 3) and ranked[:, 0].tolist() == [4, 1, 2]
    cached = list(tmp_path.glob("dense_*.npy"))
    assert len(cached) == 1
    again = DenseRetriever(encoder=dense.encoder, cache_dir=tmp_path).fit(CATALOG)
    np.testing.assert_array_equal(again.embeddings, dense.embeddings)


ANSWER = """Here are some songs you might like:
1. Queen - Bohemian Rhapsody
2. Nirvana – Smells Like Teen Spirit (Remastered)
- "Unknown Band - Nonexistent Song"
Queen - Bohemian Rhapsody
Don't Stop Me Now by Queen
"""


def test_parse_song_lines():
    assert parse_song_lines(ANSWER) == [("Queen", "Bohemian Rhapsody"),
                                        ("Nirvana", "Smells Like Teen Spirit (Remastered)"),
                                        ("Unknown Band", "Nonexistent Song"),
                                        ("Queen", "Bohemian Rhapsody"),
                                        ("Queen", "Don't Stop Me Now")]


def test_artist_track_name_resolves_fuzzily_in_llm_order():
    seen = []

    def fake_generate(queries):
        seen.extend(queries)
        return [ANSWER, "Nothing - At All\nno separator here"]

    atn = ArtistTrackNameRetriever(generate=fake_generate).fit(CATALOG)
    ranked = atn.rank(["queen classics", "silence"], k=5)
    # Bohemian Rhapsody matches the studio and the live version (same base title), in row order; the repeat is
    # dropped; the remaster suffixes on either side do not prevent a match
    assert ranked.tolist() == [[0, 3, 1, 2, -1], [-1] * 5]
    assert seen == ["queen classics", "silence"]
    assert atn.stats["names_parsed"] == 6 and atn.stats["names_resolved"] == 4
    assert atn.stats["names_unresolved"] == 2 and atn.stats["queries_without_tracks"] == 1
    assert "Unknown Band - Nonexistent Song" in atn.stats["unresolved_examples"]
    assert atn.stats["prompt"].startswith("artist_track_name_v1@")
    assert atn.rank(["queen classics", "silence"], k=2).tolist() == [[0, 3], [-1, -1]]
    rows, sim = atn.resolve("Quen", "Bohemian Rapsody")  # typos still resolve
    assert rows == [0, 3] and 0.8 <= sim < 1.0
    assert atn.resolve("The Weeknd", "Save Your Tears")[0] == []  # right artist, other song: below threshold


def test_artist_track_name_prompt_fills_placeholders():
    atn = ArtistTrackNameRetriever(generate=lambda q: [""] * len(q), num_songs=7)
    user = atn.messages("songs for a rainy day")[1]["content"]
    assert '"songs for a rainy day"' in user and "7 songs" in user


@pytest.mark.slow
def test_artist_track_name_with_the_real_smollm2():
    atn = ArtistTrackNameRetriever(num_songs=5, max_new_tokens=96, batch_size=2).fit(CATALOG)
    ranked = atn.rank(["classic rock anthems by Queen", "songs like Blinding Lights"], k=4)
    answers = list(atn.answers)
    assert ranked.shape == (2, 4) and ranked.dtype == np.int64
    assert all(a.strip() for a in answers)
    assert atn.stats["names_parsed"] > 0
    assert atn.rank(["classic rock anthems by Queen", "songs like Blinding Lights"], k=4).tolist() == ranked.tolist()
    assert atn.answers == answers  # greedy decoding: the same answers again
