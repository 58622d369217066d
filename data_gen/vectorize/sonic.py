"""SC from a given audio-feature vector: catalog `audio_features` -> standardised vectors [n, feature dim].

Standardisation statistics (mean, std per feature over present tracks) are learned in `fit` and recorded in the
manifest, so new tracks can be encoded the same way. For audio files, see data_gen/vectorize/clap.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from data_gen.catalog.reader import read_catalog
from data_gen.vectorize.base import Vectorizer


class AudioFeatureVectorizer(Vectorizer):
    modality = "SC"
    columns = ("audio_features",)

    def __init__(self, mean: list[float] | None = None, std: list[float] | None = None):
        self.mean = None if mean is None else np.asarray(mean, np.float64)
        self.std = None if std is None else np.asarray(std, np.float64)

    @property
    def dim(self) -> int:
        if self.mean is None:
            raise RuntimeError("AudioFeatureVectorizer: call fit() first")
        return len(self.mean)

    def fit(self, catalog_path: str | Path) -> None:
        total = total_sq = None
        count = 0
        for batch in read_catalog(catalog_path, columns=["audio_features"]):
            rows = [v for v in batch.column("audio_features").to_pylist() if v is not None]
            if not rows:
                continue
            arr = np.asarray(rows, dtype=np.float64)
            total = arr.sum(0) if total is None else total + arr.sum(0)
            total_sq = (arr**2).sum(0) if total_sq is None else total_sq + (arr**2).sum(0)
            count += len(arr)
        if count == 0:
            raise ValueError(f"{catalog_path}: no track has audio_features")
        self.mean = total / count
        var = np.maximum(total_sq / count - self.mean**2, 0.0)
        # A constant feature carries no information; std 1 keeps it at 0 instead of dividing by zero.
        self.std = np.where(var > 1e-12, np.sqrt(var), 1.0)

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        values = batch.column("audio_features").to_pylist()
        present = np.array([v is not None for v in values], dtype=bool)
        emb = np.zeros((len(values), self.dim), dtype=np.float32)
        if present.any():
            arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
            emb[present] = ((arr - self.mean) / self.std).astype(np.float32)
        return emb, present

    def state(self) -> dict:
        return {"source": "audio_features", "dim": self.dim, "mean": self.mean.tolist(), "std": self.std.tolist()}
