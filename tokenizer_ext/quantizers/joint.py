"""What the joint quantizers share: a track's modalities -> one fused row; training playlists -> co-occurring pairs.

`JointFeatures`: each modality z-scored with training statistics and divided by sqrt(d_m), so every modality has the
same expected squared norm whatever its dimension; a missing one is zeros (the training mean) + a presence flag.
`cooccurrence_pairs`: tracks sharing a training playlist, scored count / sqrt(count_i * count_j) (FusID Sec. 2.1);
evaluation playlists never take part.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common.registry import MODALITY_NAMES
from data_gen.catalog.playlists import Playlist, read_id_list, read_playlists


class JointFeatures:
    """Per-modality standardisation of a joint quantizer's inputs (see the module docstring)."""

    def __init__(self, dims: dict[str, int]):
        self.modalities = tuple(m for m in MODALITY_NAMES if m in dims)
        self.dims = {m: int(dims[m]) for m in self.modalities}
        self.mean: dict[str, np.ndarray] = {}
        self.scale: dict[str, np.ndarray] = {}  # std * sqrt(d_m): x_std = (x - mean) / scale

    @property
    def total_dim(self) -> int:
        return sum(self.dims.values())

    def fit(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> JointFeatures:
        for m in self.modalities:
            rows = np.asarray(x[m], np.float64)[present[m]]
            if len(rows) == 0:
                raise ValueError(f"{m}: no present training rows to standardise with")
            self.mean[m] = rows.mean(axis=0).astype(np.float32)
            std = rows.std(axis=0)
            std = np.where(std > 1e-8, std, 1.0)  # a constant feature stays constant (0) instead of dividing by 0
            self.scale[m] = (std * np.sqrt(self.dims[m])).astype(np.float32)
        return self

    def transform_block(self, m: str, x: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """float [n, d_m] -> float32 [n, d_m] standardised, 0 on rows where `present` is False."""
        out = (np.asarray(x, np.float32) - self.mean[m]) / self.scale[m]
        if present is not None:
            out[~np.asarray(present, bool)] = 0.0
        return out

    def inverse_block(self, m: str, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, np.float32) * self.scale[m] + self.mean[m]).astype(np.float32)

    def transform(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        """-> float32 [n, sum d_m]: the standardised modalities side by side (registry order), zeros where absent."""
        return np.concatenate([self.transform_block(m, x[m], present[m]) for m in self.modalities], axis=1)

    def flags(self, present: dict[str, np.ndarray]) -> np.ndarray:
        """-> float32 [n, M] presence flags (registry order)."""
        return np.stack([np.asarray(present[m], np.float32) for m in self.modalities], axis=1)

    def slices(self) -> dict[str, slice]:
        """Where each modality sits in the output of `transform`."""
        out, start = {}, 0
        for m in self.modalities:
            out[m] = slice(start, start + self.dims[m])
            start += self.dims[m]
        return out

    def save(self, path: str | Path) -> None:
        np.savez(path, **{f"mean_{m}": self.mean[m] for m in self.modalities},
                 **{f"scale_{m}": self.scale[m] for m in self.modalities})

    @classmethod
    def load(cls, path: str | Path, dims: dict[str, int]) -> JointFeatures:
        feats = cls(dims)
        with np.load(path) as z:
            for m in feats.modalities:
                feats.mean[m], feats.scale[m] = z[f"mean_{m}"], z[f"scale_{m}"]
        return feats


def any_present(present: dict[str, np.ndarray]) -> np.ndarray:
    """bool [n]: the track has at least one modality (a joint code needs some input)."""
    return np.any(np.stack([np.asarray(p, bool) for p in present.values()], axis=1), axis=1)


def training_playlists(playlists_path: str | Path, train_ids_path: str | None) -> tuple[list[Playlist], dict]:
    """The playlists whose co-occurrence may train a tokenizer: those listed in `train_ids_path` (one id a line), or
    all of them when it is 'all'. -> (playlists, record for the manifest)."""
    playlists = read_playlists(playlists_path)
    if train_ids_path == "all":
        return playlists, {"playlists": str(playlists_path), "train_playlists": "all", "used": len(playlists)}
    keep = read_id_list(train_ids_path)
    chosen = [p for p in playlists if p.playlist_id in keep]
    return chosen, {"playlists": str(playlists_path), "train_playlists": str(train_ids_path),
                    "used": len(chosen), "left_out": len(playlists) - len(chosen)}


def cooccurrence_pairs(playlists: Sequence[Playlist], row_of: dict[str, int], num_rows: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Playlists + track_id -> row (only the rows that may train) -> (int64 [P, 2] pairs i < j, float32 [P]
    normalised co-occurrence), every pair of rows that share at least one playlist, sorted by (i, j)."""
    rows, cols = [], []
    for col, p in enumerate(playlists):
        members = sorted({row_of[t] for t in p.tracks if t in row_of})
        rows += members
        cols += [col] * len(members)
    membership = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(num_rows, len(playlists)))
    counts = (membership @ membership.T).tocoo()  # [n, n] playlists shared by two rows; diagonal = count_i
    degree = np.asarray(membership.sum(axis=1)).reshape(-1)
    upper = counts.row < counts.col
    i, j, c = counts.row[upper], counts.col[upper], counts.data[upper]
    order = np.lexsort((j, i))
    i, j, c = i[order], j[order], c[order]
    score = c / np.sqrt(degree[i] * degree[j])
    return np.stack([i, j], axis=1).astype(np.int64), score.astype(np.float32)


def optimizer_step(optimizer, losses: dict, totals: dict[str, float]) -> None:
    """Back-propagate losses['loss'], step, and add every loss term to the running sums in `totals`."""
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    for k, v in losses.items():
        totals[k] = totals.get(k, 0.0) + float(v.detach())
