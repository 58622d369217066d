"""RI: release dates -> the 18-d vector of 3MToken Appendix A.

Layout: [0] year normalised over 1910..2025 (clipped to [0, 1]); [1:3] sin/cos of the month; [3:5] sin/cos of the
day; [5:16] one-hot decade (pre-1930, 1930s, ..., 2020s; later years fall in the last bin); [16] imputation flag;
[17] availability flag. Month/day that the date does not give (a year-only or year-month date) are (0, 0): off the
unit circle, so they can never be mistaken for a real month or day. A missing date gives presence 0 and the
imputation vector (only the imputation flag set).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from common.registry import RI_DECADE_EDGES, RI_DIM, RI_YEAR_MAX, RI_YEAR_MIN
from data_gen.vectorize.base import Vectorizer

IMPUTATION, AVAILABILITY = 16, 17
DECADE_OFFSET = 5


def release_vector(date: str | None) -> np.ndarray:
    """'YYYY[-MM[-DD]]' or None -> float32[18]. The date must already be validated (data_gen.catalog.reader)."""
    vec = np.zeros(RI_DIM, dtype=np.float32)
    if date is None:
        vec[IMPUTATION] = 1.0
        return vec
    parts = [int(p) for p in date.split("-")]
    year = parts[0]
    vec[0] = min(max((year - RI_YEAR_MIN) / (RI_YEAR_MAX - RI_YEAR_MIN), 0.0), 1.0)
    if len(parts) >= 2:
        angle = 2 * math.pi * (parts[1] - 1) / 12
        vec[1], vec[2] = math.sin(angle), math.cos(angle)
    if len(parts) == 3:
        angle = 2 * math.pi * (parts[2] - 1) / 31
        vec[3], vec[4] = math.sin(angle), math.cos(angle)
    decade = sum(year >= edge for edge in RI_DECADE_EDGES)  # 0 = pre-1930 ... 10 = 2020s and later
    vec[DECADE_OFFSET + decade] = 1.0
    vec[AVAILABILITY] = 1.0
    return vec


class ReleaseVectorizer(Vectorizer):
    modality = "RI"
    columns = ("release_date",)

    @property
    def dim(self) -> int:
        return RI_DIM

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        dates = batch.column("release_date").to_pylist()
        emb = np.stack([release_vector(d) for d in dates]) if dates else np.zeros((0, RI_DIM), np.float32)
        return emb, np.array([d is not None for d in dates], dtype=bool)
