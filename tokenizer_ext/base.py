"""The quantizer interface: embeddings of one modality [n, d] -> codes [n, L] and back to a reconstruction [n, d].

Every tokenizer method (RQ-VAE, VQ-VAE, K-means here; RQ-KMeans, PSRQ, ... later) implements it, so training,
the token database, and every evaluation treat them alike. Methods register themselves in QUANTIZERS by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

QUANTIZERS: dict[str, type[ModalityQuantizer]] = {}


def register(name: str):
    def wrap(cls):
        cls.method = name
        QUANTIZERS[name] = cls
        return cls
    return wrap


class ModalityQuantizer:
    """One modality's quantizer. `codebook_sizes` has one entry per level (K_1, ..., K_L)."""

    method: str = ""
    codebook_sizes: tuple[int, ...] = ()

    def fit(self, x_train: np.ndarray, x_val: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None) -> None:
        """Train on float32 [n, d] rows (present tracks only); `log` receives one dict per epoch."""
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, d] -> int64 [n, L] codes."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int [n, L] codes -> float32 [n, d] reconstruction in the embedding space."""
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> ModalityQuantizer:
        raise NotImplementedError
