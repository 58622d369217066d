"""bench.t2mr_codes: how codes group an artist's tracks; saved beams resolved to catalog tracks."""

import numpy as np

from bench.t2mr_codes import artist_spread, beam_tracks, group_labels, same_group_precision
from inference.matching import HierarchicalIndex
from tokenizer_ext.token_db import TokenDB

# six tracks, BM codes of two levels: the artist "A" has tracks 0, 1, 4; prefix (0,) holds 0, 1, 2, 3
CODES = np.array([[0, 0], [0, 1], [0, 1], [0, 2], [1, 0], [1, 1]])
DB = TokenDB(track_ids=[f"t{i}" for i in range(6)], codebook_sizes={"BM": (2, 3)}, codes={"BM": CODES})
ARTISTS = np.array(["A", "A", "B", "C", "A", "D"], dtype=object)


def test_artist_spread_counts_prefixes_per_level():
    level1, level2 = artist_spread(DB, ARTISTS, "A", "BM")
    assert level1 == {"level": 1, "tracks": 3, "prefixes": 2, "largest_holds": 2, "largest_size": 4}
    assert level2 == {"level": 2, "tracks": 3, "prefixes": 3, "largest_holds": 1, "largest_size": 1}
    one = artist_spread(DB, ARTISTS, "D", "BM")
    assert [s["largest_size"] for s in one] == [2, 1]


def test_beam_tracks_resolves_catalog_ids_and_flags_others():
    beams = [DB.tokens(4), DB.tokens(1), ["<begin_3MToken>", "<BM1-1>", "<BM2-2>", "<end_3MToken>"]]
    assert beam_tracks(DB, beams, [-0.1, -0.2, -0.3]) == [(-0.1, "t4"), (-0.2, "t1"), (-0.3, None)]


def test_same_group_precision_is_the_same_artist_share_of_the_ranking_from_a_tracks_id():
    index = HierarchicalIndex.from_token_db(DB)
    # track 0 (artist A, codes 0-0) shares only its level-1 code with tracks 1 (A), 2 (B) and 3 (C)
    assert same_group_precision(index, ARTISTS, np.array([0]), k=3) == 1 / 3
    # track 4 (A, codes 1-0): its nearest track is 5 (D), which shares its level-1 code
    assert same_group_precision(index, ARTISTS, np.array([4]), k=1) == 0.0
    assert same_group_precision(index, ARTISTS, np.array([0, 4]), k=1) == 0.5  # track 0's first neighbour is track 1


def test_album_groups_keep_albums_of_the_same_name_by_different_artists_apart():
    by_id = {"t0": {"artist": "A", "album": "Greatest Hits"}, "t1": {"artist": "A", "album": "Greatest Hits"},
             "t2": {"artist": "B", "album": "Greatest Hits"}, "t3": {"artist": "A", "album": None},
             "t4": {"artist": "A", "album": "Live"}, "t5": {"artist": None, "album": "Live"}}
    ids = [f"t{i}" for i in range(6)]
    albums = group_labels(by_id, ids, "album")
    assert albums[0] == albums[1] and len(set(albums[[0, 2, 4]])) == 3
    assert albums[3] == albums[5] == ""                          # no album, or no artist: in no group
    assert list(group_labels(by_id, ids, "artist")) == ["A", "A", "B", "A", "A", ""]
    # ranked from track 0 (codes 0-0): tracks 1, 2, 3 share its level-1 code; only track 1 is on its album
    index = HierarchicalIndex.from_token_db(DB)
    assert same_group_precision(index, albums, np.array([0]), k=3) == 1 / 3
