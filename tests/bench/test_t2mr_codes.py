"""bench.t2mr_codes: how codes group an artist's tracks; saved beams resolved to catalog tracks."""

import numpy as np

from bench.t2mr_codes import artist_spread, beam_tracks
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
