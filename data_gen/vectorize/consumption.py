"""TC: playlists or listening sessions -> track2vec embeddings (skip-gram with negative sampling, gensim), 128-d.

Each playlist is a "sentence" of track ids, fed as several seeded random permutations because playlists are sets
(`shuffle` off for ordered sessions). `exclude` drops playlists (the evaluation split) so that benchmarks do not leak
into the features. Vectors are L2-normalised; tracks in no training playlist have presence 0.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from common.registry import TC_DIM
from data_gen.catalog.playlists import Playlist, read_playlists
from data_gen.vectorize.base import Vectorizer


def stable_hash(text: str) -> int:
    """Process-independent string hash: gensim seeds each word's initial vector with `hashfxn`, and Python's
    built-in hash() changes between processes, which would make track2vec irreproducible."""
    return zlib.crc32(text.encode("utf-8"))


class _Corpus:
    """Restartable iterable over (shuffled copies of) playlists, as gensim wants for several epochs."""

    def __init__(self, playlists: list[Playlist], copies: int, shuffle: bool, seed: int):
        self.playlists, self.copies, self.shuffle, self.seed = playlists, copies, shuffle, seed

    def __iter__(self) -> Iterator[list[str]]:
        rng = random.Random(self.seed)
        for p in self.playlists:
            if len(p.tracks) < 2:
                continue
            for _ in range(self.copies if self.shuffle else 1):
                tracks = list(p.tracks)
                if self.shuffle:
                    rng.shuffle(tracks)
                yield tracks


class Track2VecVectorizer(Vectorizer):
    modality = "TC"
    columns = ("track_id",)

    def __init__(self, playlists_path: str | Path, exclude: set[str] | None = None, dim: int = TC_DIM,
                 window: int = 20, negative: int = 5, epochs: int = 15, copies: int = 5, shuffle: bool = True,
                 seed: int = 42, workers: int = 1):
        self.playlists_path = Path(playlists_path)
        self.exclude = set(exclude or ())
        self.params = dict(vector_size=dim, window=window, negative=negative, epochs=epochs, sg=1, min_count=1,
                           seed=seed, workers=workers, hashfxn=stable_hash)
        self.copies, self.shuffle, self.seed = copies, shuffle, seed
        self.vectors: dict[str, np.ndarray] = {}
        self.used_playlists: list[str] = []

    @property
    def dim(self) -> int:
        return self.params["vector_size"]

    def fit(self, catalog_path: str | Path | None = None) -> None:
        from gensim.models import Word2Vec

        playlists = [p for p in read_playlists(self.playlists_path) if p.playlist_id not in self.exclude]
        self.used_playlists = sorted(p.playlist_id for p in playlists)
        corpus = _Corpus(playlists, self.copies, self.shuffle, self.seed)
        if not any(True for _ in corpus):
            raise ValueError(f"{self.playlists_path}: no playlist with >= 2 tracks after exclusions")
        # Deterministic given (playlists, seed): one worker thread, seeded shuffles, and a stable hashfxn.
        model = Word2Vec(sentences=corpus, **self.params)
        wv = model.wv
        norms = np.linalg.norm(wv.vectors, axis=1, keepdims=True)
        unit = wv.vectors / np.maximum(norms, 1e-12)
        self.vectors = {key: unit[i].astype(np.float32) for i, key in enumerate(wv.index_to_key)}

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        ids = batch.column("track_id").to_pylist()
        emb = np.zeros((len(ids), self.dim), dtype=np.float32)
        present = np.zeros(len(ids), dtype=bool)
        for i, tid in enumerate(ids):
            vec = self.vectors.get(tid)
            if vec is not None:
                emb[i], present[i] = vec, True
        return emb, present

    def state(self) -> dict:
        return {"playlists": str(self.playlists_path), "playlists_used": len(self.used_playlists),
                "playlists_excluded": len(self.exclude), "vocabulary": len(self.vectors),
                "copies": self.copies, "shuffle": self.shuffle,
                **{k: v for k, v in self.params.items() if k != "hashfxn"}}
