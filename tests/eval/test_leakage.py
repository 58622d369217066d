"""The leakage report of the evaluations: each playlist-derived feature is judged by the provenance it records for
itself (ST: the ingest manifest that built the catalog; TC: embeddings/TC.json), not by the last vectorize run, and
evaluated playlists that no feature was built from are "not used by any feature", not leaks."""

import csv
import json

from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.catalog.sources.spotify import PLAYLIST_COLUMNS, TRACK_COLUMNS
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run
from eval.cbr import CBRConfig, report_markdown
from eval.cbr import run as cbr_run
from eval.common import feature_provenance, provenance_line
from tests.eval.helpers import write_playlist_file, write_tokenizer_dir
from tests.eval.test_cbr import IDS, tiny_db

PLAYLISTS = {"p0": IDS[0:4], "p1": IDS[4:8], "p2": IDS[8:12], "p3": [IDS[0], IDS[12]]}


def _run_dir(tmp_path):
    """A catalog-source run (tracks t0..t12, playlists p0..p3) with TC built without any exclusion list."""
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps({"track_id": t, "release_date": "2001"}) + "\n" for t in IDS))
    pls = write_playlist_file(tmp_path / "pl.jsonl", PLAYLISTS)
    run_dir = tmp_path / "run"
    ingest_run(IngestConfig(run_dir=str(run_dir), source="catalog", input=str(cat), playlists=str(pls)))
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="TC", tc_epochs=1))
    return run_dir


def _ids_file(path, *ids):
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def test_tc_provenance_is_tcs_own_not_the_last_vectorize_runs(tmp_path):
    run_dir = _run_dir(tmp_path)
    eval_ids = _ids_file(tmp_path / "eval.txt", "p0", "p1")
    # a later vectorize run of another modality names the exclusion list; TC was built without it
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI", tc_exclude_playlists=str(eval_ids)))
    prov = feature_provenance(run_dir, {"p0", "p1"})
    assert prov["TC"]["leaks"] is True and prov["TC"]["eval_playlists_leaked"] == 2
    line = provenance_line(prov)
    assert "TC features held out 0/2 evaluated playlists (no exclusion list): LEAKS" in line
    # TC rebuilt with the list: clean, whatever the last run of another modality says
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="TC", tc_epochs=1,
                                  tc_exclude_playlists=str(eval_ids)))
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI"))
    prov = feature_provenance(run_dir, {"p0", "p1"})
    assert prov["TC"]["leaks"] is False and prov["TC"]["eval_playlists_held_out"] == 2
    assert f"TC features held out 2/2 evaluated playlists ({eval_ids.resolve()}): clean" in provenance_line(prov)


def test_playlists_absent_from_the_run_are_not_used_by_any_feature(tmp_path):
    run_dir = _run_dir(tmp_path)
    prov = feature_provenance(run_dir, {"other-1", "other-2", "p2"})
    tc = prov["TC"]
    assert (tc["eval_playlists_not_used"], tc["eval_playlists_leaked"], tc["leaks"]) == (2, 1, True)
    prov = feature_provenance(run_dir, {"other-1", "other-2"})
    assert prov["TC"]["leaks"] is False
    line = provenance_line(prov)
    assert "TC features held out 0/2 evaluated playlists (no exclusion list), 2 not used by any feature: clean" in line
    assert "LEAKS" not in line


def test_changed_exclusion_list_cannot_be_verified(tmp_path):
    run_dir = _run_dir(tmp_path)
    eval_ids = _ids_file(tmp_path / "eval.txt", "p0")
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="TC", tc_epochs=1,
                                  tc_exclude_playlists=str(eval_ids)))
    _ids_file(eval_ids, "p0", "p1")  # edited after TC was built
    prov = feature_provenance(run_dir, {"p0", "p1"})
    assert prov["TC"]["leaks"] is None
    assert "TC features: UNVERIFIED (exclusion list" in provenance_line(prov)
    assert "changed since the features were built: cannot verify" in provenance_line(prov)


def _spotify_csv(path):
    """A tiny Spotify Songs CSV: 4 tracks, playlists pl_a (t1, t2) and pl_b (t3, t4)."""
    columns = ("track_id", *TRACK_COLUMNS, *PLAYLIST_COLUMNS)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for i, pid in ((1, "pl_a"), (2, "pl_a"), (3, "pl_b"), (4, "pl_b")):
            row = dict.fromkeys(columns, "0.5")
            row.update(track_id=f"s{i}", track_name=f"Song {i}", track_artist="A", track_album_id="al",
                       track_album_name="Al", track_album_release_date="2001-01-01", key="1", mode="1", tempo="120",
                       track_popularity="50", playlist_id=pid, playlist_name=f"Mix {pid}", playlist_genre="rock",
                       playlist_subgenre="indie")
            writer.writerow(row)
    return path


def test_st_provenance_from_the_ingest_manifest(tmp_path):
    exclude = _ids_file(tmp_path / "eval.txt", "pl_a")
    run_dir = tmp_path / "run"
    ingest_run(IngestConfig(run_dir=str(run_dir), source="spotify", input=str(_spotify_csv(tmp_path / "s.csv")),
                            exclude_tag_playlists=str(exclude)))
    assert feature_provenance(run_dir, {"pl_a"})["ST"]["leaks"] is False
    assert feature_provenance(run_dir, {"pl_b"})["ST"]["leaks"] is True
    prov = feature_provenance(run_dir, {"elsewhere"})
    assert prov["ST"]["leaks"] is False and prov["ST"]["eval_playlists_not_used"] == 1
    assert "ST features held out 0/1 evaluated playlists" in provenance_line(prov)
    assert "1 not used by any feature: clean" in provenance_line(prov)
    # ST computed from another catalog than the one this ingest manifest describes: not judged by it
    (run_dir / "embeddings").mkdir()
    (run_dir / "embeddings" / "ST.json").write_text(json.dumps({
        "modality": "ST", "status": "done", "inputs": {"catalog": {"path": "x", "sha256": "0" * 64}}}))
    prov = feature_provenance(run_dir, {"pl_a"})
    assert prov["ST"]["leaks"] is None
    assert "ST features: UNVERIFIED (ST was built from another catalog than ingest_manifest.json describes)" in \
        provenance_line(prov)


def test_cbr_report_names_the_provenance(tmp_path):
    run_dir = _run_dir(tmp_path)
    tokenizer_dir = write_tokenizer_dir(tmp_path / "tok", tiny_db())
    eval_playlists = write_playlist_file(tmp_path / "eval.jsonl", {"p1": IDS[4:8], "q9": IDS[8:12]})
    result = cbr_run(CBRConfig(tokenizer_dir=str(tokenizer_dir), playlists=str(eval_playlists), k=[1],
                               max_seeds=0, run_dir=str(run_dir), dense=False))
    assert result["feature_provenance"]["TC"]["eval_playlists_leaked"] == 1
    assert ("TC features held out 0/2 evaluated playlists (no exclusion list), 1 not used by any feature: LEAKS"
            in report_markdown(result))
