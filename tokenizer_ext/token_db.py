"""The token database: track_id -> codes per (code group, level), saved as `token_db.parquet` + `token_db.json`.

Columns: `track_id`, `<MOD>_<level>` per code group in GROUP_NAMES order (level 1-based, -1 = missing for this
track), then `dedup` when disambiguation is on. Tracks with identical full code sequences conflict; `assign_dedup`
gives each the k of an `<ID-k>` token (its rank in its group, catalog order), so every sequence becomes unique.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokenizer_ext.tokens import GROUP_NAMES, MISSING, codes_to_tokens, music_vocabulary, special_vocabulary

DB_FILE, META_FILE = "token_db.parquet", "token_db.json"


def assign_dedup(full_codes: np.ndarray) -> np.ndarray:
    """[N, C] code rows -> int32 [N]: index of each row within its group of identical rows, in row order."""
    if len(full_codes) == 0:
        return np.zeros(0, np.int32)
    _, inverse = np.unique(full_codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")  # groups contiguous, row order kept inside a group
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    dedup = np.empty(len(order), np.int32)
    dedup[order] = np.arange(len(order)) - group_start
    return dedup


def conflict_stats(full_codes: np.ndarray) -> dict:
    """ID quality of a set of code rows (FusID paper): cardinality (distinct IDs) and conflict rate (share of tracks
    whose ID is shared with another track). Identity: tracks = cardinality + tracks_in_conflict - conflict_groups."""
    n = len(full_codes)
    if n == 0:
        return {"tracks": 0, "cardinality": 0, "conflict_groups": 0, "tracks_in_conflict": 0, "conflict_rate": 0.0,
                "max_group": 0}
    _, counts = np.unique(full_codes, axis=0, return_counts=True)
    shared = counts[counts > 1]
    return {"tracks": n, "cardinality": int(len(counts)), "conflict_groups": int(len(shared)),
            "tracks_in_conflict": int(shared.sum()), "conflict_rate": float(shared.sum() / n),
            "max_group": int(counts.max())}


@dataclass
class TokenDB:
    track_ids: list[str]
    codebook_sizes: dict[str, tuple[int, ...]]
    # group (modality or joint group) -> int [N, L]; MISSING (-1) rows for tracks without the modality
    codes: dict[str, np.ndarray]
    tokenizer: str = "rqvae"
    dedup: np.ndarray | None = None  # int32 [N] when disambiguation is on
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.track_ids)
        self.codebook_sizes = {m: tuple(int(k) for k in s) for m, s in self.codebook_sizes.items()}
        for m, arr in self.codes.items():
            if m not in self.codebook_sizes:
                raise KeyError(f"codes for {m} but no codebook sizes")
            if arr.shape != (n, len(self.codebook_sizes[m])):
                raise ValueError(f"{m}: codes of shape {arr.shape}, expected {(n, len(self.codebook_sizes[m]))}")
            present = arr[:, 0] != MISSING
            if (arr[present] < 0).any() or (arr[present] >= np.asarray(self.codebook_sizes[m])).any():
                raise ValueError(f"{m}: code index out of codebook range")
            if (arr[~present] != MISSING).any():
                raise ValueError(f"{m}: partially missing code rows")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in GROUP_NAMES if m in self.codes)

    @property
    def num_tracks(self) -> int:
        return len(self.track_ids)

    def presence(self, modality: str) -> np.ndarray:
        return self.codes[modality][:, 0] != MISSING

    def full_codes(self) -> np.ndarray:
        """[N, sum of L] all groups' codes side by side (GROUP_NAMES order): the track's full ID without dedup."""
        return np.concatenate([self.codes[m] for m in self.modalities], axis=1)

    def conflict_stats(self) -> dict:
        full = self.full_codes()
        if self.dedup is not None:
            full = np.concatenate([full, self.dedup[:, None]], axis=1)
        return conflict_stats(full)

    def with_disambiguation(self) -> TokenDB:
        return TokenDB(self.track_ids, self.codebook_sizes, self.codes, self.tokenizer,
                       assign_dedup(self.full_codes()), dict(self.meta))

    def prefix(self, levels: int) -> TokenDB:
        """The IDs cut to their first `levels` codes per group (a residual quantizer's coarse-to-fine prefix), with
        the tracks' conflicts disambiguated again (when this database disambiguates)."""
        if levels < 1:
            raise ValueError(f"levels={levels}: keep at least one level")
        sizes = {m: s[:levels] for m, s in self.codebook_sizes.items()}
        codes = {m: np.ascontiguousarray(c[:, :levels]) for m, c in self.codes.items()}
        db = TokenDB(self.track_ids, sizes, codes, self.tokenizer, None, {**self.meta, "prefix_levels": levels})
        return db.with_disambiguation() if self.dedup is not None else db

    def tokens(self, row: int, boundaries: bool = True) -> list[str]:
        codes = {m: self.codes[m][row].tolist() for m in self.modalities}
        dedup = None if self.dedup is None else int(self.dedup[row])
        return codes_to_tokens(codes, dedup=dedup, boundaries=boundaries)

    def vocabulary(self) -> list[str]:
        """Music tokens then special tokens (boundaries, `<MOD-none>`, `<ID-k>`): what the LLM's tokenizer gains."""
        max_dedup = int(self.dedup.max()) + 1 if self.dedup is not None and len(self.dedup) else 0
        return music_vocabulary(self.codebook_sizes) + special_vocabulary(self.modalities, max_dedup)

    def row_of(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.track_ids)}

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        columns: dict[str, pa.Array] = {"track_id": pa.array(self.track_ids, pa.string())}
        for m in self.modalities:
            dtype = np.int16 if max(self.codebook_sizes[m]) < 2**15 else np.int32
            for level in range(self.codes[m].shape[1]):
                columns[f"{m}_{level + 1}"] = pa.array(self.codes[m][:, level].astype(dtype))
        if self.dedup is not None:
            columns["dedup"] = pa.array(self.dedup.astype(np.int32))
        tmp = out_dir / (DB_FILE + ".tmp")
        pq.write_table(pa.table(columns), tmp)
        tmp.replace(out_dir / DB_FILE)
        meta = {**self.meta, "tokenizer": self.tokenizer, "modalities": list(self.modalities),
                "codebook_sizes": {m: list(s) for m, s in self.codebook_sizes.items() if m in self.codes},
                "num_tracks": self.num_tracks, "disambiguation": self.dedup is not None,
                "vocabulary_size": len(self.vocabulary()), "conflicts": self.conflict_stats()}
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (out_dir / "vocabulary.txt").write_text("\n".join(self.vocabulary()) + "\n")
        return out_dir / DB_FILE

    @classmethod
    def load(cls, path: str | Path) -> TokenDB:
        path = Path(path)
        out_dir = path if path.is_dir() else path.parent
        meta = json.loads((out_dir / META_FILE).read_text())
        table = pq.read_table(out_dir / DB_FILE)
        sizes = {m: tuple(s) for m, s in meta["codebook_sizes"].items()}
        codes = {m: np.stack([table.column(f"{m}_{level}").to_numpy().astype(np.int32)
                              for level in range(1, len(sizes[m]) + 1)], axis=1)
                 for m in meta["modalities"]}
        dedup = table.column("dedup").to_numpy().astype(np.int32) if "dedup" in table.column_names else None
        extra = {k: v for k, v in meta.items() if k not in ("tokenizer", "modalities", "codebook_sizes", "num_tracks",
                                                            "disambiguation", "vocabulary_size", "conflicts")}
        return cls(table.column("track_id").to_pylist(), sizes, codes, meta["tokenizer"], dedup, extra)
