import json
import subprocess
import sys

import numpy as np
import pytest

from data_gen.vectorize.embeddings import EmbeddingStore
from eval.cbr import CBRConfig, dense_rank, parse_weights, run
from eval.common import feature_provenance
from tests.eval.helpers import write_playlist_file, write_store, write_tokenizer_dir
from tokenizer_ext.token_db import TokenDB

IDS = [f"t{i}" for i in range(13)]
PLAYLISTS = {"P1": IDS[0:4], "P2": IDS[4:8], "P3": IDS[8:12], "P4": ["t12", "not-in-catalog"]}


def tiny_db() -> TokenDB:
    """Tracks of a playlist share their BM and SC codes; t1 lacks SC; t12 is in no playlist of >= 2 tracks."""
    bm = [[0, 0]] * 4 + [[1, 0]] * 4 + [[2, 0]] * 4 + [[3, 1]]
    sc = [[0], [-1], [0], [0]] + [[1]] * 4 + [[2]] * 4 + [[0]]
    return TokenDB(IDS, {"BM": (4, 2), "SC": (3,)}, {"BM": np.array(bm), "SC": np.array(sc)})


def tiny_store(run_dir, ids=IDS, seed=0):
    """BM embeddings near one direction per playlist; SC random, missing for t1 and t5."""
    rng = np.random.default_rng(seed)
    centers = np.eye(8)[:4] * 5
    group = np.array([0] * 4 + [1] * 4 + [2] * 4 + [3])[: len(ids)]
    bm = centers[group] + rng.normal(0, 0.1, (len(ids), 8))
    sc = rng.normal(0, 1, (len(ids), 3))
    sc_present = np.ones(len(ids), bool)
    sc_present[[1, 5]] = False
    sc[~sc_present] = 0.0
    return write_store(run_dir, list(ids), {"BM": (bm, np.ones(len(ids), bool)), "SC": (sc, sc_present)})


@pytest.fixture()
def tokenizer_dir(tmp_path):
    return write_tokenizer_dir(tmp_path / "run" / "tokenizers" / "rqvae", tiny_db())


@pytest.fixture()
def playlists(tmp_path):
    return write_playlist_file(tmp_path / "eval_playlists.jsonl", PLAYLISTS)


def test_known_answer_rows_and_counts(tokenizer_dir, playlists):
    result = run(CBRConfig(tokenizer_dir=str(tokenizer_dir), playlists=str(playlists), k=(1, 3), max_seeds=0))
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["multimodal", "only BM", "only SC", "without BM", "without SC"]  # no run dir: no dense
    multi = rows["multimodal"]["metrics"]
    # a seed's three playlist mates outrank everything, and the seed itself is not in its ranking
    assert multi["precision@3"] == multi["recall@3"] == multi["hit@1"] == 1.0
    # SC alone (by hand): P1 seeds t0, t2, t3 tie with t12 (same SC code, lower rows first) -> 2/3; t1 has no SC,
    # so all scores are 0 and the lowest rows t0, t2, t3 come first -> 3/3; P2 and P3 seeds -> 3/3
    assert rows["only SC"]["metrics"]["precision@3"] == pytest.approx((2 / 3 * 3 + 1 + 8) / 12)
    assert rows["without SC"]["metrics"] == rows["only BM"]["metrics"]
    assert rows["without BM"]["modalities"] == ["SC"]
    c = result["counts"]
    assert (c["playlists"], c["playlists_skipped_lt2_tracks"], c["playlists_eligible"]) == (4, 1, 3)
    assert (c["seed_candidates"], c["seeds"], c["playlist_tracks_not_in_catalog"]) == (12, 12, 1)


def test_seed_sampling_is_fixed_by_the_seed(tokenizer_dir, playlists):
    cfg = dict(tokenizer_dir=str(tokenizer_dir), playlists=str(playlists), k=(1, 3), max_seeds=5)
    a, b = run(CBRConfig(**cfg, seed=1)), run(CBRConfig(**cfg, seed=1))
    assert a["counts"]["seeds"] == 5
    assert [r["metrics"] for r in a["rows"]] == [r["metrics"] for r in b["rows"]]


def test_dense_row_on_the_same_seeds(tmp_path, tokenizer_dir, playlists):
    run_dir = tiny_store(tmp_path / "run")
    result = run(CBRConfig(tokenizer_dir=str(tokenizer_dir), playlists=str(playlists), k=(1, 3), max_seeds=0,
                           run_dir=str(run_dir)))
    dense = result["rows"][-1]
    assert dense["name"] == "dense" and dense["modalities"] == ["BM", "SC"]
    assert dense["metrics"]["hit@1"] == 1.0  # BM embeddings cluster by playlist


def test_dense_rank_equals_cosine_over_the_concatenation(tmp_path):
    ids = [f"t{i}" for i in range(30)]
    rng = np.random.default_rng(3)
    sc_present = rng.random(30) > 0.3
    store = EmbeddingStore(write_store(tmp_path / "run", ids, {"BM": (rng.normal(size=(30, 8)), np.ones(30, bool)),
                                                               "SC": (rng.normal(size=(30, 3)), sc_present)}))
    track_ids = ids[:25] + ["absent-from-store"]  # a token-db track without embeddings scores 0 everywhere
    seeds = np.array([0, 1, 5, 7, 25])
    ranked = dense_rank(store, ["BM", "SC"], track_ids, seeds, k=6, chunk_size=2, block_bytes=4 * 11 * 4)

    parts = []
    for m in ("BM", "SC"):
        x = np.zeros((len(track_ids), store.dim(m)))
        for i, t in enumerate(track_ids):
            if t in ids and store.presence(m)[ids.index(t)]:
                v = np.asarray(store.load(m)[ids.index(t)], float)
                x[i] = v / np.linalg.norm(v)
        parts.append(x)
    concat = np.concatenate(parts, axis=1)
    norms = np.linalg.norm(concat, axis=1)
    unit = concat / np.where(norms > 0, norms, 1.0)[:, None]
    for s, row in zip(seeds, ranked):
        sims = unit @ unit[s]
        order = sorted((t for t in range(len(track_ids)) if t != s), key=lambda t: (-sims[t], t))
        assert row.tolist() == order[:6]


def test_feature_provenance_names_leaking_features(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "embeddings").mkdir(parents=True)
    excluded = tmp_path / "eval_ids.txt"
    excluded.write_text("P1\nP2\n")
    (run_dir / "ingest_manifest.json").write_text(json.dumps({"config": {"source": "spotify",
                                                                         "exclude_tag_playlists": None}}))
    (run_dir / "embeddings" / "manifest.json").write_text(json.dumps({"config": {"tc_exclude_playlists":
                                                                                 str(excluded)}}))
    prov = feature_provenance(run_dir, {"P1", "P2"})
    assert prov["ST"]["leaks"] and prov["ST"]["eval_playlists_held_out"] == 0
    assert not prov["TC"]["leaks"] and prov["TC"]["eval_playlists_held_out"] == 2
    assert feature_provenance(run_dir, {"P1", "P3"})["TC"]["leaks"]


def test_weights_parsing():
    assert parse_weights("", ("BM", "TC")) == {"BM": 1.0, "TC": 1.0}
    assert parse_weights("tc=2.5, AC=3", ("BM", "TC")) == {"BM": 1.0, "TC": 2.5}
    with pytest.raises(ValueError):
        parse_weights("TC", ("TC",))


def test_command_prints_table_and_writes_json(tmp_path, tokenizer_dir, playlists):
    tiny_store(tmp_path / "run")  # found through the default layout RUN_DIR/tokenizers/METHOD
    out = subprocess.run([sys.executable, "-m", "eval.cbr", "--tokenizer_dir", str(tokenizer_dir), "--playlists",
                          str(playlists), "--k", "1", "3", "--max_seeds", "0"], capture_output=True, text=True,
                         check=True)
    assert "| multimodal | 1.0000 |" in out.stdout and "| dense |" in out.stdout and "| without SC |" in out.stdout
    saved = json.loads((tokenizer_dir / "eval" / "cbr.json").read_text())
    assert saved["counts"]["seeds"] == 12 and saved["k"] == [1, 3] and saved["wall_time_s"] > 0


@pytest.mark.parametrize("module", ["eval.cbr", "eval.id_quality", "eval.reconstruction", "eval.plots"])
def test_every_command_has_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
    assert "--tokenizer_dir" in out.stdout and "--config" in out.stdout and "--out" in out.stdout


def test_test_tracks_only_restricts_seeds_candidates_and_relevant_sets(tmp_path, playlists):
    tok = write_tokenizer_dir(tmp_path / "tok", tiny_db(), test_tracks=IDS[0:8])  # P1 and P2 tracks only
    result = run(CBRConfig(tokenizer_dir=str(tok), playlists=str(playlists), k=(3,), max_seeds=0,
                           test_tracks_only=True))
    c = result["counts"]
    assert (c["catalog_tracks"], c["playlists_eligible"], c["playlists_skipped_lt2_tracks"], c["seeds"]) == (8, 2, 2, 8)
    assert result["rows"][0]["metrics"]["precision@3"] == 1.0
    assert result["test_split"].endswith("test_tracks.txt")
