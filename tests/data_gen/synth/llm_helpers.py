"""Shared helpers of the LLM data tests: a small ingested demo catalog, configs that keep tests quick."""

from __future__ import annotations

from pathlib import Path

from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run


def demo_run_dir(tmp_path: Path, num_tracks: int = 12, name: str = "run") -> Path:
    """A run directory with an ingested demo catalog of `num_tracks` tracks (all nine modalities)."""
    run_dir = tmp_path / name
    ingest_run(IngestConfig(run_dir=str(run_dir), source="demo", num_tracks=num_tracks, seed=0))
    return run_dir


FAST = {"progress": False, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 10.0}
