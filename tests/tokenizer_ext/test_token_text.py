"""Words of each music token: the most frequent phrases of the tracks that carry it."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.token_text import token_texts


def test_token_texts_describe_the_tracks_of_each_code(tmp_path):
    n = 6
    pq.write_table(pa.table({
        "track_id": [f"t{i}" for i in range(n)],
        "artist": ["Nadia", "Nadia", "Nadia", "Omar", "Omar", "Omar"],
        "tags": [["rock", "hard rock"]] * 3 + [["latin", "reggaeton"]] * 2 + [None],
        "release_date": ["1975", "1976", "1975", "2019", "2019", "2018"]}), tmp_path / "catalog.parquet")
    st = np.array([[0, 1, 2]] * 3 + [[1, 0, 0]] * 2 + [[-1, -1, -1]])
    ri = np.array([[3, 0, 0]] * 3 + [[5, 1, 1]] * 3)
    db = TokenDB([f"t{i}" for i in range(n)], {"ST": (2, 2, 4), "RI": (8, 2, 2)}, {"ST": st, "RI": ri})
    texts = token_texts(db, tmp_path / "catalog.parquet")
    assert set(texts["<ST1-0>"].split(", ")) == {"rock", "hard rock"}
    assert set(texts["<ST1-1>"].split(", ")) == {"latin", "reggaeton"}
    assert texts["<RI1-3>"].split(", ")[:2] == ["1970s", "mid 1970s"] and "1975" in texts["<RI1-3>"]
    assert "2019" in texts["<RI1-5>"] and "<ST1-2>" not in texts  # no track carries ST1-2
