import json
import subprocess
import sys

import numpy as np
import pytest

from data_gen.catalog.track_split import split_tracks
from eval.common import load_test_split
from eval.id_quality import IDQualityConfig, codebook_usage, id_quality, run
from tests.eval.helpers import write_tokenizer_dir
from tokenizer_ext.token_db import TokenDB

IDS = ["a", "b", "c", "d", "e"]


def hand_db() -> TokenDB:
    """SC (K = 4, 2): a and b identical, d has no SC; BM (K = 2): 1 for all but c."""
    sc = np.array([[0, 0], [0, 0], [1, 1], [-1, -1], [2, 0]])
    bm = np.array([[1], [1], [0], [1], [1]])
    return TokenDB(IDS, {"BM": (2,), "SC": (4, 2)}, {"BM": bm, "SC": sc})


IS_TEST = np.array([False, False, False, True, True])  # train a, b, c; test d, e


def test_codebook_under_utilisation_by_hand():
    levels = {(r["modality"], r["level"]): r for r in id_quality(hand_db(), IS_TEST)["levels"]}
    sc1, sc2 = levels[("SC", 1)], levels[("SC", 2)]
    # train uses SC1 codes {0, 1} of 4, SC2 {0, 1} of 2; test (only e has SC) uses SC1 {2}, SC2 {0}
    assert (sc1["used_train"], sc1["cur_train"], sc1["used_test"], sc1["cur_test"]) == (2, 0.5, 1, 0.75)
    assert (sc2["cur_train"], sc2["cur_test"]) == (0.0, 0.5)
    assert sc1["test_only_codes"] == 1 and sc2["test_only_codes"] == 0  # SC1 code 2 never seen in training
    assert (sc1["train_tracks"], sc1["test_tracks"]) == (3, 1)
    assert levels[("BM", 1)]["cur_train"] == 0.0 and levels[("BM", 1)]["cur_test"] == 0.5
    assert codebook_usage(np.full((3, 2), -1), (4, 2))[0]["cur"] == 1.0  # nothing present: nothing used


def test_cardinality_and_conflicts_before_and_after_disambiguation():
    ids = {(r["subset"], r["disambiguation"]): r for r in id_quality(hand_db(), IS_TEST)["ids"]}
    before = ids[("all", False)]
    # full IDs: a = b = (1, 0, 0); c, d, e distinct -> 4 distinct, 1 group of 2 tracks
    assert (before["cardinality"], before["conflict_groups"], before["tracks_in_conflict"]) == (4, 1, 2)
    assert before["conflict_rate"] == pytest.approx(0.4) and before["identity_holds"]
    after = ids[("all", True)]
    assert (after["cardinality"], after["conflict_rate"], after["identity_holds"]) == (5, 0.0, True)
    assert ids[("train", False)]["conflict_rate"] == pytest.approx(2 / 3)
    assert ids[("test", False)]["conflict_rate"] == 0.0


def test_per_modality_ids_count_present_tracks_only():
    rows = {(r["modality"], r["subset"]): r for r in id_quality(hand_db(), IS_TEST)["modality_ids"]}
    bm = rows[("BM", "all")]  # 1, 1, 0, 1, 1 -> 2 distinct, one group of 4
    assert (bm["tracks"], bm["cardinality"], bm["tracks_in_conflict"], bm["conflict_rate"]) == (5, 2, 4, 0.8)
    sc = rows[("SC", "all")]  # d has no SC
    assert (sc["tracks"], sc["cardinality"], sc["conflict_rate"]) == (4, 3, 0.5)


def test_command_reads_test_tracks_and_writes_json(tmp_path):
    tok = write_tokenizer_dir(tmp_path / "tok", hand_db(), test_tracks=["d", "e"])
    out = subprocess.run([sys.executable, "-m", "eval.id_quality", "--tokenizer_dir", str(tok)],
                         capture_output=True, text=True, check=True)
    assert "| SC | 1 | 4 | 2 | 0.5000 | 1 | 0.7500 | 1 |" in out.stdout
    assert "| all | no | 5 | 4 | 1 | 2 | 0.4000 | 2 | ok |" in out.stdout
    saved = json.loads((tok / "eval" / "id_quality.json").read_text())
    assert saved["counts"] == {"tracks": 5, "train": 3, "test": 2}


def test_split_falls_back_to_split_json(tmp_path):
    tok = write_tokenizer_dir(tmp_path / "tok", hand_db())
    with pytest.raises(FileNotFoundError):
        load_test_split(tok, IDS)
    (tok / "split.json").write_text(json.dumps({"seed": 3, "test_fraction": 0.4}))
    mask, source = load_test_split(tok, IDS)
    np.testing.assert_array_equal(mask, split_tracks(IDS, 0.4, 3))
    assert "split.json" in source
    result = run(IDQualityConfig(tokenizer_dir=str(tok)))
    assert result["counts"]["test"] == int(mask.sum())
