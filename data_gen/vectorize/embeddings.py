"""The embedding store of a run directory: `embeddings/` -> track order, per-modality matrices, presence masks.

    tracks.parquet (track_id of row i), <MOD>.npy (float32 [num_tracks, dim]), presence.npy (bool [num_tracks, 9],
    registry order), <MOD>.json (status, dim, present count, vectorizer state, the inputs it was built from: catalog
    sha256, and for TC the playlists and exclusion list with their sha256), manifest.json

Rows whose presence is False hold a fill, never data. Matrices are memory-mapped, so later stages stream them.
A modality being computed lives in <MOD>.partial.npy / .partial.presence.npy / .progress.json until it is finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from common.registry import MODALITY_NAMES, get_modality, modality_index

EMBEDDINGS_DIR = "embeddings"


class EmbeddingStore:
    """Read access to `run_dir/embeddings`."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / EMBEDDINGS_DIR
        if not (self.dir / "tracks.parquet").exists():
            raise FileNotFoundError(f"{self.dir}: no embeddings here (run `python -m data_gen.vectorize.run` first)")
        self._track_ids: list[str] | None = None

    @property
    def track_ids(self) -> list[str]:
        if self._track_ids is None:
            self._track_ids = pq.read_table(self.dir / "tracks.parquet").column("track_id").to_pylist()
        return self._track_ids

    @property
    def num_tracks(self) -> int:
        return pq.ParquetFile(self.dir / "tracks.parquet").metadata.num_rows

    def info(self, modality: str) -> dict:
        name = get_modality(modality).name
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {"status": "not computed"}

    def modalities(self) -> tuple[str, ...]:
        """Modalities with a written matrix (>= 1 present track), in registry order."""
        return tuple(m for m in MODALITY_NAMES if self.info(m).get("status") == "done")

    def dim(self, modality: str) -> int:
        return int(self.info(modality)["dim"])

    def load(self, modality: str, mmap: bool = True) -> np.ndarray:
        name = get_modality(modality).name
        if name not in self.modalities():
            raise KeyError(f"{self.dir}: modality {name} has no embeddings ({self.info(name).get('status')})")
        path = self.dir / f"{name}.npy"
        matrix = np.load(path, mmap_mode="r" if mmap else None)
        if matrix.ndim != 2 or matrix.shape[0] != self.num_tracks:
            raise ValueError(f"{path}: shape {matrix.shape} does not match the {self.num_tracks:,} tracks of "
                             f"{self.dir / 'tracks.parquet'} (track order mismatch: re-run data_gen.vectorize.run)")
        return matrix

    def presence(self, modality: str | None = None) -> np.ndarray:
        path = self.dir / "presence.npy"
        mask = np.load(path, mmap_mode="r")
        if mask.shape != (self.num_tracks, len(MODALITY_NAMES)):
            raise ValueError(f"{path}: shape {mask.shape}, expected ({self.num_tracks:,}, {len(MODALITY_NAMES)}) "
                             f"(track order mismatch: re-run data_gen.vectorize.run)")
        return mask if modality is None else np.asarray(mask[:, modality_index(modality)])

    def check_finite(self, modality: str, rows: np.ndarray, chunk: int = 65536) -> None:
        """Raise a ValueError naming the file, row and track of the first present row with NaN or infinity."""
        matrix = self.load(modality)
        for start in range(0, len(rows), chunk):
            idx = rows[start:start + chunk]
            bad = ~np.isfinite(np.asarray(matrix[idx])).all(axis=1)
            if bad.any():
                row = int(idx[np.argmax(bad)])
                raise ValueError(f"{self.dir / (get_modality(modality).name + '.npy')}: row {row} (track "
                                 f"{self.track_ids[row]!r}) has NaN or infinite values")

    def manifest(self) -> dict:
        return json.loads((self.dir / "manifest.json").read_text())
