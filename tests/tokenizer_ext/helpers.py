"""Shared set-up of the tokenizer tests."""

from pathlib import Path

from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run


def demo_run(folder: Path, num_tracks: int, modalities) -> Path:
    """A generated demo catalog of `num_tracks`, ingested and vectorized for `modalities`, in FOLDER/run."""
    run_dir = folder / "run"
    ingest_run(IngestConfig(run_dir=str(run_dir), source="demo", num_tracks=num_tracks))
    vectorize_run(VectorizeConfig(run_dir=str(run_dir), modalities=",".join(modalities)))
    return run_dir
