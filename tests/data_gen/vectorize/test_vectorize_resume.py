"""`python -m data_gen.vectorize` killed mid-way (SIGKILL once chunks of a modality are on disk) and run again: the
finished modality is skipped, the killed one continues at the row it reached, and the files equal an uninterrupted
run's byte for byte."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import data_gen.vectorize.run as vectorize
from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from tests.process import kill_when

REPO = Path(__file__).resolve().parents[3]
TRACKS = 1200
# MC is computed first (registry order), then RI; chunks of 2 tracks give the kill a few hundred chunk boundaries
ARGS = ["--modalities", "MC,RI", "--chunk_rows", "2"]


def _command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "data_gen.vectorize", "--run_dir", str(run_dir), *ARGS]


def _rows_done(progress: Path) -> int:
    try:
        return json.loads(progress.read_text())["rows_done"]
    except (OSError, ValueError, KeyError):  # not there yet, or caught while it is written
        return 0


def _info(run_dir: Path, modality: str) -> dict:
    """A modality's record without what differs between two run directories: time taken, input paths."""
    info = json.loads((run_dir / "embeddings" / f"{modality}.json").read_text())
    inputs = {k: v.get("sha256") if isinstance(v, dict) else v for k, v in (info.get("inputs") or {}).items()}
    return {**{k: v for k, v in info.items() if k != "seconds"}, "inputs": inputs}


def test_killed_run_resumes_at_its_row_and_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    ingest_run(IngestConfig(run_dir=str(killed), source="demo", num_tracks=TRACKS, seed=0))
    straight.mkdir()
    shutil.copy(killed / "catalog.parquet", straight / "catalog.parquet")
    proc = subprocess.run(_command(straight), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    progress = killed / "embeddings" / "RI.progress.json"
    returncode = kill_when(_command(killed), lambda: _rows_done(progress) >= 100, 300, 0.005,
                           cwd=REPO)  # kill once some RI chunks are on disk
    assert returncode == -signal.SIGKILL, "the run finished before it could be killed"
    start = _rows_done(progress)
    assert 0 < start < TRACKS and (killed / "embeddings" / "MC.json").exists()
    assert not (killed / "embeddings" / "RI.json").exists()

    transformed: dict[str, int] = {}  # rows each vectorizer computes in the resumed run
    build = vectorize.build_vectorizer

    def counting_build(name, *args, **kwargs):
        vec = build(name, *args, **kwargs)
        transform = vec.transform

        def counting_transform(batch):
            transformed[name] = transformed.get(name, 0) + batch.num_rows
            return transform(batch)

        vec.transform = counting_transform
        return vec

    monkeypatch.setattr(vectorize, "build_vectorizer", counting_build)
    vectorize.main(["--run_dir", str(killed), *ARGS])  # the same command again
    assert transformed == {"RI": TRACKS - start}  # MC skipped, RI from the row it reached: no row computed twice
    assert f"[RI] resuming at row {start:,}/{TRACKS:,}" in capsys.readouterr().err

    for name in ("MC.npy", "RI.npy", "presence.npy", "tracks.parquet"):
        assert (killed / "embeddings" / name).read_bytes() == (straight / "embeddings" / name).read_bytes(), name
    for m in ("MC", "RI"):
        assert _info(killed, m) == _info(straight, m)
    assert not progress.exists()
