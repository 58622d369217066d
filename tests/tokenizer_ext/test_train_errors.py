"""Bad inputs to tokenizer training give clear errors: NaN rows, mismatched track order, empty modalities."""

import json

import numpy as np
import pytest

from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.vectorize.embeddings import EmbeddingStore
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run
from tokenizer_ext.train import TrainConfig
from tokenizer_ext.train import run as train_run


@pytest.fixture()
def run_dir(tmp_path):
    rows = [{"track_id": f"t{i}", "tempo": 60.0 + i, "key": i % 12, "mode": i % 2,
             "release_date": f"{1950 + i}", "title": None} for i in range(40)]
    rows[5]["tempo"] = None
    (tmp_path / "cat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest_run(IngestConfig(run_dir=str(tmp_path / "run"), source="catalog", input=str(tmp_path / "cat.jsonl")))
    vectorize_run(VectorizeConfig(run_dir=str(tmp_path / "run"), modalities="MC,RI,BM"))
    return tmp_path / "run"


def _cfg(run_dir, modalities="all"):
    return TrainConfig(run_dir=str(run_dir), method="kmeans", codebook_sizes=(4,), modalities=modalities,
                       device="cpu")


def test_nan_row_names_file_row_and_track(run_dir):
    matrix = np.load(run_dir / "embeddings" / "RI.npy", mmap_mode="r+")
    matrix[7, 3] = np.nan
    matrix.flush()
    with pytest.raises(ValueError, match=r"RI.npy: row 7 \(track 't7'\) has NaN or infinite values"):
        train_run(_cfg(run_dir, "RI"))


def test_mismatched_track_order_is_detected(run_dir):
    path = run_dir / "embeddings" / "MC.npy"
    np.save(path, np.load(path)[:-3])  # a matrix from another catalog: 37 rows for 40 tracks
    with pytest.raises(ValueError, match=r"shape \(37, 246\) does not match the 40 tracks of .*\(track order mismatch"):
        EmbeddingStore(run_dir).load("MC")
    with pytest.raises(ValueError, match="track order mismatch"):
        train_run(_cfg(run_dir, "MC"))


def test_modality_with_zero_present_tracks(run_dir):
    assert EmbeddingStore(run_dir).info("BM")["status"] == "absent"
    with pytest.raises(ValueError, match="requested modalities without embeddings: BM"):
        train_run(_cfg(run_dir, "BM,RI"))
    summary = train_run(_cfg(run_dir))  # 'all': absent modalities are skipped and reported, not fatal
    assert "BM" in summary["skipped"] and set(summary["modalities"]) == {"MC", "RI"}
