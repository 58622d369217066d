"""Small on-disk fixtures for the eval tests: token databases, embedding stores and playlists built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.registry import MODALITY_NAMES
from data_gen.catalog.playlists import Playlist, write_playlists
from tokenizer_ext.token_db import TokenDB


def random_db(n: int = 200, sizes: dict[str, tuple[int, ...]] | None = None, missing: float = 0.2,
              seed: int = 0) -> TokenDB:
    """Random codes over small codebooks (many shared prefixes and ties), `missing` share of rows missing."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"BM": (3, 2, 4), "SC": (4, 3), "TC": (2, 3, 2)}
    codes = {}
    for m, s in sizes.items():
        c = np.stack([rng.integers(0, k, n) for k in s], axis=1).astype(np.int32)
        c[rng.random(n) < missing] = -1
        codes[m] = c
    return TokenDB([f"t{i:04d}" for i in range(n)], sizes, codes)


def write_store(run_dir: Path, track_ids: list[str], modalities: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write run_dir/embeddings in the EmbeddingStore layout: {mod: (float32 [N, d], bool presence [N])}."""
    emb = Path(run_dir) / "embeddings"
    emb.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"track_id": pa.array(track_ids, pa.string())}), emb / "tracks.parquet")
    presence = np.zeros((len(track_ids), len(MODALITY_NAMES)), bool)
    for m, (matrix, present) in modalities.items():
        np.save(emb / f"{m}.npy", np.asarray(matrix, np.float32))
        presence[:, MODALITY_NAMES.index(m)] = present
        (emb / f"{m}.json").write_text(json.dumps({"modality": m, "status": "done", "dim": int(matrix.shape[1]),
                                                   "present": int(np.sum(present)), "settings": "test"}))
    np.save(emb / "presence.npy", presence)
    (emb / "manifest.json").write_text(json.dumps({"stage": "vectorize", "config": {"tc_exclude_playlists": None}}))
    return Path(run_dir)


def write_tokenizer_dir(out_dir: Path, db: TokenDB, test_tracks: list[str] | None = None) -> Path:
    db.save(out_dir)
    if test_tracks is not None:
        (Path(out_dir) / "test_tracks.txt").write_text("".join(f"{t}\n" for t in test_tracks))
    return Path(out_dir)


def write_playlist_file(path: Path, playlists: dict[str, list[str]]) -> Path:
    write_playlists([Playlist(pid, pid, tracks) for pid, tracks in playlists.items()], path)
    return Path(path)
