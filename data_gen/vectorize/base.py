"""The vectorizer interface: catalog record batches -> (embeddings float32 [n, dim], presence bool [n]).

A vectorizer may first `fit` on the whole catalog (streamed), e.g. to learn standardisation statistics or a
track2vec model; `transform` then maps one Arrow record batch to a block of rows. Rows whose presence is False
hold a documented fill (zeros, or the paper's imputation vector for RI/MC) that must never be read as data:
the presence mask is the source of truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa


class Vectorizer:
    modality: str = ""
    columns: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def fit(self, catalog_path: str | Path) -> None:
        """Optional pass over the catalog before transform (default: nothing to learn)."""

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def state(self) -> dict:
        """What the manifest should record about this vectorizer (encoder name, statistics, ...)."""
        return {}
