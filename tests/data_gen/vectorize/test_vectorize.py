"""The vectorize stage: run-directory contract, absent modalities, resume after a crash, and the real CSV."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.registry import MODALITY_NAMES
from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.vectorize.embeddings import EmbeddingStore
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run


def _small_catalog(tmp_path, n=50):
    rows = []
    for i in range(n):
        rows.append({"track_id": f"t{i}", "title": f"Song {i}", "artist": f"Artist {i % 5}",
                     "tempo": None if i % 10 == 0 else 60.0 + i, "key": i % 12, "mode": i % 2,
                     "release_date": None if i % 7 == 0 else f"{1950 + i}-0{1 + i % 9}",
                     "audio_features": [float(i), float(i % 3)]})
    path = tmp_path / "cat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    ingest_run(IngestConfig(run_dir=str(run_dir), source="catalog", input=str(path)))
    return run_dir


def test_contract_and_absent_modalities(tmp_path):
    run_dir = _small_catalog(tmp_path)
    summary = vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="AC,SC,MC,RI,TC", chunk_rows=16))
    store = EmbeddingStore(run_dir)
    assert store.track_ids == [f"t{i}" for i in range(50)]
    assert store.modalities() == ("SC", "MC", "RI")
    assert summary["modalities"]["AC"]["status"] == "absent" and summary["modalities"]["TC"]["status"] == "absent"
    assert not (run_dir / "embeddings" / "AC.npy").exists()
    assert store.load("MC").shape == (50, 246) and store.load("RI").shape == (50, 18) and store.dim("SC") == 2
    presence = store.presence()
    assert presence.shape == (50, 9) and presence.dtype == bool
    assert store.presence("RI").sum() == 50 - len(range(0, 50, 7))
    assert store.presence("MC").all()  # key is always given, tempo sometimes missing
    assert not presence[:, MODALITY_NAMES.index("AC")].any()
    with pytest.raises(KeyError, match="AC has no embeddings"):
        store.load("AC")
    manifest = store.manifest()
    assert manifest["counts"]["tracks"] == 50 and manifest["inputs"]["catalog"]["sha256"]
    assert manifest["vectorizers"]["SC"]["mean"] == pytest.approx([24.5, 49 / 50])


def test_resume_after_crash_and_skip_when_up_to_date(tmp_path, capsys):
    run_dir = _small_catalog(tmp_path)
    cfg = VectorizeConfig(run_dir=str(run_dir), modalities="RI,MC", chunk_rows=8)
    vectorize_run(cfg)
    out = run_dir / "embeddings"
    reference = np.load(out / "RI.npy").copy()
    ri_presence = EmbeddingStore(run_dir).presence("RI").copy()

    # simulate a crash after 3 chunks: the modality being filled aside (<MOD>.partial.npy), rows past 24 never
    # written, progress says 24, no completion record
    info = json.loads((out / "RI.json").read_text())
    (out / "RI.npy").rename(out / "RI.partial.npy")
    matrix = np.load(out / "RI.partial.npy", mmap_mode="r+")
    matrix[24:] = 0
    matrix.flush()
    del matrix
    partial_presence = ri_presence.copy()
    partial_presence[24:] = False
    np.save(out / "RI.partial.presence.npy", partial_presence)
    (out / "RI.json").unlink()
    (out / "RI.progress.json").write_text(json.dumps({"settings": info["settings"], "dim": 18, "rows_done": 24}))
    mc_mtime = os.path.getmtime(out / "MC.npy")
    capsys.readouterr()
    vectorize_run(cfg)
    assert "[RI] resuming at row 24/50" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out / "RI.npy"), reference)
    np.testing.assert_array_equal(EmbeddingStore(run_dir).presence("RI"), ri_presence)
    assert not (out / "RI.progress.json").exists() and not list(out.glob("RI.partial*"))
    assert os.path.getmtime(out / "MC.npy") == mc_mtime  # finished modality was skipped, not recomputed


def test_new_catalog_invalidates_old_embeddings(tmp_path):
    run_dir = _small_catalog(tmp_path, n=20)
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI"))
    _small_catalog(tmp_path, n=30)
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI"))
    assert EmbeddingStore(run_dir).load("RI").shape == (30, 18)


@pytest.fixture(scope="module")
def spotify_vectors(spotify_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("spotify_vec")
    ingest_run(IngestConfig(run_dir=str(run_dir), source="spotify", input=str(spotify_csv)))
    # every modality but BM on the full catalog (BM is covered on a slice below: it costs minutes on 2 cores)
    summary = vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="AC,ST,SC,MC,RI,SF,AB,TC",
                                            tc_epochs=3))
    return run_dir, summary


def test_spotify_full_catalog_dims_and_presence(spotify_vectors):
    run_dir, summary = spotify_vectors
    mods = summary["modalities"]
    assert summary["tracks"] == 28356
    assert {m: mods[m]["status"] for m in ("AC", "SF", "AB")} == dict.fromkeys(("AC", "SF", "AB"), "absent")
    assert {m: mods[m]["dim"] for m in ("ST", "SC", "MC", "RI", "TC")} == {"ST": 384, "SC": 9, "MC": 246, "RI": 18,
                                                                           "TC": 128}
    catalog = pq.read_table(run_dir / "catalog.parquet")
    assert mods["ST"]["present"] == 28356 - catalog.column("tags").null_count == 23088
    assert mods["SC"]["present"] == mods["MC"]["present"] == mods["RI"]["present"] == 28356
    playlists = [json.loads(x) for x in (run_dir / "playlists.jsonl").read_text().splitlines()]
    # a track whose only playlist has a single track co-occurs with nothing: no TC vector for it
    in_playlists = {t for p in playlists if len(p["tracks"]) >= 2 for t in p["tracks"]}
    store = EmbeddingStore(run_dir)
    tc_present = {t for t, ok in zip(store.track_ids, store.presence("TC")) if ok}
    assert tc_present == in_playlists and len(tc_present) == 23087
    for m in ("ST", "SC", "MC", "RI", "TC"):
        matrix = store.load(m)
        assert np.isfinite(matrix).all()
        assert not matrix[~store.presence(m)].any() if m in ("ST", "SC", "TC") else True


def test_spotify_tc_exclusion_keeps_eval_playlists_out(spotify_vectors, tmp_path):
    run_dir, _ = spotify_vectors
    from data_gen.catalog.split import SplitConfig
    from data_gen.catalog.split import run as split_run

    info = split_run(SplitConfig(run_dir=str(run_dir), eval_fraction=0.2, seed=0, out_dir=str(tmp_path / "s")))
    assert (info["train"], info["eval"]) == (307, 77)
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="TC", tc_epochs=1,
                                  tc_exclude_playlists=str(tmp_path / "s" / "playlists_eval.txt")))
    store = EmbeddingStore(run_dir)
    train = [json.loads(x) for x in (tmp_path / "s" / "playlists_train.jsonl").read_text().splitlines()]
    train_tracks = {t for p in train if len(p["tracks"]) >= 2 for t in p["tracks"]}
    tc_present = {t for t, ok in zip(store.track_ids, store.presence("TC")) if ok}
    assert tc_present == train_tracks
    assert store.info("TC")["state"]["playlists_used"] == 307


def test_spotify_bm_on_a_slice(spotify_csv, tmp_path):
    # the first 1,500 tracks of the real catalog through the real encoder
    full = tmp_path / "full"
    ingest_run(IngestConfig(run_dir=str(full), source="spotify", input=str(spotify_csv)))
    table = pq.read_table(full / "catalog.parquet").slice(0, 1500)
    sliced = tmp_path / "slice"
    sliced.mkdir()
    pq.write_table(table, sliced / "catalog.parquet")
    summary = vectorize_run(VectorizeConfig(run_dir=str(sliced), modalities="BM"))
    assert summary["modalities"]["BM"]["dim"] == 384
    titles = table.column("title").to_pylist()
    artists = table.column("artist").to_pylist()
    expected = [t is not None or a is not None for t, a in zip(titles, artists)]
    np.testing.assert_array_equal(EmbeddingStore(sliced).presence("BM"), expected)
    bm = EmbeddingStore(sliced).load("BM")
    np.testing.assert_allclose(np.linalg.norm(bm[np.array(expected)], axis=1), 1, atol=1e-5)
