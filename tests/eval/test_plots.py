import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.plots import PlotsConfig, genre_purity, run, token_usage
from tests.eval.helpers import write_tokenizer_dir
from tokenizer_ext.token_db import TokenDB

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_genre_purity_by_hand():
    codes = np.array([0, 0, 0, 1, 1, -1, 1])
    genres = np.array(["rock", "rock", "pop", "pop", "pop", "rock", None], dtype=object)
    out = genre_purity(codes, genres)
    # code 0: rock 2, pop 1 -> 2; code 1: pop 2 (the None track is skipped, the -1 track has no code) -> 2
    assert out == {"tracks": 5, "purity": pytest.approx(4 / 5), "majority_baseline": pytest.approx(3 / 5),
                   "codes_used": 2, "genres": 2}
    assert genre_purity(np.array([0]), np.array([None], dtype=object))["purity"] is None


def test_token_usage_counts_train_and_test_separately():
    db = TokenDB(["a", "b", "c", "d"], {"SC": (3, 2)}, {"SC": np.array([[0, 1], [0, 0], [2, 1], [-1, -1]])})
    usage = token_usage(db, np.array([False, False, True, True]))
    assert usage["SC"][0] == {"level": 1, "codebook_size": 3, "train": [2, 0, 0], "test": [0, 0, 1]}
    assert usage["SC"][1]["train"] == [1, 1] and usage["SC"][1]["test"] == [0, 1]


def test_plots_write_pngs_and_numbers(tmp_path):
    ids = [f"t{i}" for i in range(8)]
    db = TokenDB(ids, {"BM": (2, 2), "TC": (3,)},
                 {"BM": np.array([[0, 0], [0, 1], [0, 0], [1, 1], [1, 0], [1, 1], [0, 0], [1, 0]]),
                  "TC": np.array([[0], [1], [2], [0], [1], [2], [-1], [0]])})
    run_dir = tmp_path / "run"
    tok = write_tokenizer_dir(run_dir / "tokenizers" / "rqvae", db, test_tracks=["t6", "t7"])
    genres = ["rock"] * 3 + ["pop"] * 3 + ["rock", None]
    pq.write_table(pa.table({"track_id": ids, "genre": genres}), run_dir / "catalog.parquet")
    result = run(PlotsConfig(tokenizer_dir=str(tok), run_dir=str(run_dir)))
    names = sorted(p.split("/")[-1] for p in result["files"])
    assert names == ["genre_purity.png", "token_usage_BM.png", "token_usage_TC.png"]
    for path in result["files"]:
        data = open(path, "rb").read()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000
    # BM level 1 splits rock (code 0: t0, t1, t2, t6) from pop (code 1: t3, t4, t5); t7 has no genre
    assert result["genre_purity"]["BM"]["purity"] == 1.0
    # TC codes 0, 1, 2 each hold one rock and one pop track (t6 has no TC, t7 no genre): 3 of 6
    assert result["genre_purity"]["TC"]["purity"] == pytest.approx(3 / 6)
    assert result["genre_purity"]["TC"]["majority_baseline"] == pytest.approx(3 / 6)


def test_plots_command_without_catalog_skips_genre(tmp_path, capsys):
    from eval.plots import main

    db = TokenDB(["a", "b"], {"SC": (2,)}, {"SC": np.array([[0], [1]])})
    tok = write_tokenizer_dir(tmp_path / "tok", db, test_tracks=["b"])
    main(["--tokenizer_dir", str(tok)])
    assert "genre purity skipped" in capsys.readouterr().out
    saved = json.loads((tok / "eval" / "plots.json").read_text())
    assert saved["genre_purity"] == {} and saved["token_usage"]["SC"][0]["train"] == [1, 0]
    assert (tok / "eval" / "plots" / "token_usage_SC.png").stat().st_size > 0
