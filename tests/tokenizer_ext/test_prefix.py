"""tokenizer_ext.prefix: IDs cut to their first levels keep those codes, lose nothing, and are unique again."""

import numpy as np
import pytest

from tokenizer_ext.prefix import main, write_prefix
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING


def _db(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    codes = {"BM": rng.integers(0, 4, (n, 3)), "ST": rng.integers(0, 3, (n, 2))}
    codes["ST"][::5] = MISSING  # tracks without the modality
    db = TokenDB([f"t{i}" for i in range(n)], {"BM": (4, 8, 8), "ST": (3, 5)}, codes, "rqvae").with_disambiguation()
    db.save(tmp_path / "src")
    (tmp_path / "src" / "split.json").write_text("{}")
    return db


def test_prefix_keeps_the_first_levels_and_disambiguates_again(tmp_path):
    db = _db(tmp_path)
    stats = write_prefix(tmp_path / "src", 1, tmp_path / "l1")
    cut = TokenDB.load(tmp_path / "l1")
    assert cut.track_ids == db.track_ids and cut.codebook_sizes == {"BM": (4,), "ST": (3,)}
    for m in db.modalities:
        np.testing.assert_array_equal(cut.codes[m][:, 0], db.codes[m][:, 0])
        np.testing.assert_array_equal(cut.presence(m), db.presence(m))
    # 4 x (3 + missing) first-level pairs for 200 tracks: many conflicts, all resolved by the new dedup
    assert stats["tracks"] == 200 and stats["conflict_rate"] == 0.0 and cut.dedup.max() > db.dedup.max()
    assert len({tuple(cut.tokens(r)) for r in range(200)}) == 200
    assert cut.meta["prefix_levels"] == 1 and (tmp_path / "l1" / "split.json").exists()
    # ST has only two levels: asking for three of BM keeps ST's two
    write_prefix(tmp_path / "src", 3, tmp_path / "l3")
    assert TokenDB.load(tmp_path / "l3").codebook_sizes == db.codebook_sizes


def test_too_many_levels_is_a_one_line_error(tmp_path, capsys):
    _db(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--token_db_dir", str(tmp_path / "src"), "--levels", "4", "--out_dir", str(tmp_path / "l4")])
    assert exit_info.value.code == 2 and "at most 3 levels" in capsys.readouterr().err
