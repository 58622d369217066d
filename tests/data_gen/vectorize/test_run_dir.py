"""Vectorize and its run directory: refuses ingest outputs that its manifest does not describe, finishes a modality
under temporary names (a failed run leaves the previous one, a crashed one resumes), records TC's exclusion list,
and shows progress."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common.manifest import ManifestMismatch, file_sha256
from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.vectorize.embeddings import EmbeddingStore
from data_gen.vectorize.release import ReleaseVectorizer
from data_gen.vectorize.run import VectorizeConfig, main
from data_gen.vectorize.run import run as vectorize_run


def _ingest(tmp_path, name="run", n=50, playlists=True):
    rows = [{"track_id": f"t{i}", "release_date": f"{1950 + i}", "tempo": 60.0 + i} for i in range(n)]
    cat = tmp_path / f"{name}.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pls = None
    if playlists:
        pls = tmp_path / f"{name}_pl.jsonl"
        pls.write_text("".join(json.dumps({"playlist_id": f"p{j}", "name": f"Mix {j}",
                                           "tracks": [f"t{i}" for i in range(j, n, 5)]}) + "\n" for j in range(5)))
    run_dir = tmp_path / name
    ingest_run(IngestConfig(run_dir=str(run_dir), source="catalog", input=str(cat),
                            playlists=str(pls) if pls else None))
    return run_dir


def _main_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_refuses_a_catalog_the_ingest_manifest_does_not_describe(tmp_path, capsys):
    run_dir = _ingest(tmp_path)
    other = _ingest(tmp_path, name="other", n=30)
    shutil.copy(other / "catalog.parquet", run_dir / "catalog.parquet")  # a half-finished re-run, or by hand
    err = _main_error(["--run_dir", str(run_dir), "--modalities", "RI"], capsys)
    assert err.startswith(f"error: {run_dir / 'catalog.parquet'}: does not match {run_dir / 'ingest_manifest.json'}")
    assert not (run_dir / "embeddings").exists()


def test_refuses_playlists_the_ingest_manifest_does_not_describe(tmp_path, capsys):
    run_dir = _ingest(tmp_path)
    with open(run_dir / "playlists.jsonl", "a") as fh:
        fh.write(json.dumps({"playlist_id": "px", "name": "late", "tracks": ["t1", "t2"]}) + "\n")
    err = _main_error(["--run_dir", str(run_dir), "--modalities", "TC"], capsys)
    assert "playlists.jsonl: does not match" in err
    # an old playlists.jsonl beside a catalog ingested without playlists
    bare = _ingest(tmp_path, name="bare", playlists=False)
    shutil.copy(run_dir / "playlists.jsonl", bare / "playlists.jsonl")
    err = _main_error(["--run_dir", str(bare), "--modalities", "RI"], capsys)
    assert err == (f"error: {bare / 'playlists.jsonl'}: not written by the run that {bare / 'ingest_manifest.json'} "
                   f"describes (it records no playlists); re-run the ingest stage")
    with pytest.raises(ManifestMismatch):
        vectorize_run(VectorizeConfig(run_dir=str(bare), modalities="RI"))


def test_manifest_without_output_checksums_is_read_with_a_warning(tmp_path, capsys):
    run_dir = _ingest(tmp_path)
    manifest = json.loads((run_dir / "ingest_manifest.json").read_text())
    del manifest["outputs"]  # as older versions wrote it
    (run_dir / "ingest_manifest.json").write_text(json.dumps(manifest))
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI"))
    assert "records no output checksums" in capsys.readouterr().err
    assert EmbeddingStore(run_dir).modalities() == ("RI",)


def _fail_after(monkeypatch, calls: int):
    original = ReleaseVectorizer.transform
    seen = {"n": 0}

    def transform(self, batch):
        seen["n"] += 1
        if seen["n"] > calls:
            raise RuntimeError("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(ReleaseVectorizer, "transform", transform)


def test_failed_run_leaves_the_previous_modality_and_resumes(tmp_path, monkeypatch, capsys):
    run_dir = _ingest(tmp_path)
    out = run_dir / "embeddings"
    cfg = VectorizeConfig(run_dir=str(run_dir), modalities="RI", chunk_rows=8, overwrite=True)
    vectorize_run(cfg)
    before = {name: (out / name).read_bytes() for name in ("RI.npy", "RI.json", "presence.npy")}
    manifest = (out / "manifest.json").read_bytes()

    _fail_after(monkeypatch, calls=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        vectorize_run(cfg)
    # the finished modality, its presence column and the manifest are untouched; the new one is being filled aside
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (out / "manifest.json").read_bytes() == manifest
    assert json.loads((out / "RI.progress.json").read_text())["rows_done"] == 16
    assert (out / "RI.partial.npy").exists() and (out / "RI.partial.presence.npy").exists()

    monkeypatch.undo()
    capsys.readouterr()
    vectorize_run(cfg)
    assert "[RI] resuming at row 16/50" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in ("RI.npy", "presence.npy")} == {
        name: before[name] for name in ("RI.npy", "presence.npy")}
    assert not list(out.glob("RI.partial*")) and not (out / "RI.progress.json").exists()


def test_tc_records_its_exclusion_list(tmp_path):
    run_dir = _ingest(tmp_path)
    exclude = tmp_path / "eval.txt"
    exclude.write_text("p0\n")
    cfg = VectorizeConfig(run_dir=str(run_dir), modalities="TC", tc_epochs=1, tc_exclude_playlists=str(exclude))
    vectorize_run(cfg)
    info = EmbeddingStore(run_dir).info("TC")
    assert info["inputs"]["tc_exclude_playlists"] == {"path": str(exclude.resolve()), "sha256": file_sha256(exclude)}
    assert info["inputs"]["playlists"]["sha256"] == file_sha256(run_dir / "playlists.jsonl")
    assert info["state"]["playlists_used"] == 4
    # the same path with other ids is another TC: recomputed, not "up to date"
    exclude.write_text("p0\np1\n")
    vectorize_run(cfg)
    info = EmbeddingStore(run_dir).info("TC")
    assert info["state"]["playlists_used"] == 3 and info["inputs"]["tc_exclude_playlists"]["sha256"] == file_sha256(
        exclude)


def test_progress_bar_in_a_log(tmp_path):
    run_dir = _ingest(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "data_gen.vectorize", "--run_dir", str(run_dir), "--modalities",
                           "RI,MC", "--chunk_rows", "8"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("RI (date)", "MC (musical)"):  # stderr is not a terminal here
        assert name in proc.stderr
    assert "50/50" in proc.stderr and "track" in proc.stderr


def test_new_catalog_starts_over(tmp_path):
    run_dir = _ingest(tmp_path)
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI,TC", tc_epochs=1))
    out = run_dir / "embeddings"
    (out / "MC.partial.npy").write_bytes(b"left from a crash")
    _ingest(tmp_path, n=40)  # re-ingest into the same directory
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities="RI"))
    store = EmbeddingStore(run_dir)
    assert store.num_tracks == 40 and store.modalities() == ("RI",) and store.presence().shape == (40, 9)
    assert not (out / "TC.json").exists() and not (out / "MC.partial.npy").exists()
    assert np.asarray(store.presence("RI")).all()
