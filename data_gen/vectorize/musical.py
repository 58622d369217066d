"""MC: tempo + key (+ mode) -> one-hot tempo bins and one-hot key, 3MToken Appendix A (246-d).

Layout: [0:220] one bin per integer BPM 30..249 (floor of the tempo); [220] tempo imputation bin (tempo missing or
outside 30..249); [221:233] major keys C..B; [233:245] minor keys C..B; [245] unknown key. A key whose mode is not
given puts 0.5 on both its major and minor slot (the pitch class is known, the mode is not). A track with neither
tempo nor key has presence 0 and the imputation vector (imputation bin + unknown-key slot).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from common.registry import MC_DIM, MC_TEMPO_BINS, MC_TEMPO_MAX, MC_TEMPO_MIN
from data_gen.vectorize.base import Vectorizer

TEMPO_IMPUTATION = MC_TEMPO_BINS  # 220
KEY_OFFSET = MC_TEMPO_BINS + 1  # 221
KEY_UNKNOWN = KEY_OFFSET + 24  # 245


def tempo_bin(tempo: float | None) -> int:
    if tempo is None or not math.isfinite(tempo) or not MC_TEMPO_MIN <= tempo < MC_TEMPO_MAX + 1:
        return TEMPO_IMPUTATION
    return int(math.floor(tempo)) - MC_TEMPO_MIN


def musical_vector(tempo: float | None, key: int | None, mode: int | None) -> np.ndarray:
    """(BPM, pitch class 0-11, mode 1=major/0=minor) with None for unknown -> float32[246]."""
    vec = np.zeros(MC_DIM, dtype=np.float32)
    vec[tempo_bin(tempo)] = 1.0
    if key is None:
        vec[KEY_UNKNOWN] = 1.0
    elif mode is None:
        vec[KEY_OFFSET + key] = 0.5
        vec[KEY_OFFSET + 12 + key] = 0.5
    else:
        vec[KEY_OFFSET + key + (0 if mode == 1 else 12)] = 1.0
    return vec


class MusicalVectorizer(Vectorizer):
    modality = "MC"
    columns = ("tempo", "key", "mode")

    @property
    def dim(self) -> int:
        return MC_DIM

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        tempos, keys, modes = (batch.column(c).to_pylist() for c in self.columns)
        rows = [musical_vector(t, k, m) for t, k, m in zip(tempos, keys, modes)]
        emb = np.stack(rows) if rows else np.zeros((0, MC_DIM), np.float32)
        present = np.array([t is not None or k is not None for t, k in zip(tempos, keys)], dtype=bool)
        return emb, present
