"""Text retrieval over a catalog's metadata: BM25 and a sentence encoder, each `fit(catalog)` then
`rank(queries, k) -> int64 [len(queries), k]` catalog rows, best first, ties to the lower row, -1 pads.

T2MR's text baselines (eval.baselines) and the hybrid answers of music3m-recommend / music3m-serve
(inference.recommend, --hybrid) use the same two.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from data_gen.vectorize.text import TextEncoder
from inference.matching import top_k

TEXT_COLUMNS = ("title", "artist", "album", "tags", "genre")
_WORD = re.compile(r"[a-z0-9]+")


def catalog_records(catalog: str | Path | pa.Table | Sequence[dict]) -> list[dict]:
    """A catalog (parquet path, Table or records) -> records with the text columns (absent ones as None)."""
    if isinstance(catalog, (str, Path)):
        names = pq.read_schema(catalog).names
        catalog = pq.read_table(catalog, columns=[c for c in TEXT_COLUMNS if c in names])
    if isinstance(catalog, pa.Table):
        catalog = catalog.select([c for c in TEXT_COLUMNS if c in catalog.column_names]).to_pylist()
    return [{c: rec.get(c) for c in TEXT_COLUMNS} for rec in catalog]


def track_text(rec: dict) -> str:
    """One track's metadata as one text, shared by BM25 and the dense baseline:
    'Title by Artist, from the album Album. Tags: a, b, genre'."""
    text = f"{rec.get('title') or 'unknown title'} by {rec.get('artist') or 'unknown artist'}"
    if rec.get("album"):
        text += f", from the album {rec['album']}"
    tags = list(rec.get("tags") or [])
    if rec.get("genre") and rec["genre"] not in tags:
        tags.append(rec["genre"])
    return f"{text}. Tags: {', '.join(tags)}" if tags else text


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric runs: 'Rock & Roll (2019 Remix)' -> ['rock', 'roll', '2019', 'remix']."""
    return _WORD.findall(text.lower())


def _rank_scores(scores: np.ndarray, k: int) -> np.ndarray:
    rows = top_k(np.asarray(scores, dtype=np.float64), k)
    if rows.shape[1] < k:  # fewer tracks than k
        rows = np.pad(rows, ((0, 0), (0, k - rows.shape[1])), constant_values=-1)
    return rows


class BM25Retriever:
    """Okapi BM25 with the Lucene idf (never negative). For a query q and track text d of length |d| tokens:

        score(q, d) = sum over query tokens t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))
        idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)),   tf = tf(t, d) = count of t in d

    A token repeated in the query counts once per repetition; tokens no track has score nothing. The catalog side
    is one sparse matrix [N, vocabulary] of the per-(track, token) terms, so a batch of queries is one product."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = float(k1), float(b)
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0)
        self.terms: sp.csr_matrix | None = None  # [N, V]

    def fit(self, catalog: str | Path | pa.Table | Sequence[dict] | None = None, texts: Sequence[str] | None = None
            ) -> BM25Retriever:
        """Index a catalog (its `track_text`), or `texts` directly."""
        texts = [track_text(r) for r in catalog_records(catalog)] if texts is None else list(texts)
        rows, cols, tfs, lengths = [], [], [], []
        for i, text in enumerate(texts):
            counts = Counter(tokenize(text))
            lengths.append(sum(counts.values()))
            for token, tf in counts.items():
                rows.append(i)
                cols.append(self.vocabulary.setdefault(token, len(self.vocabulary)))
                tfs.append(tf)
        n, v = len(texts), len(self.vocabulary)
        tf = sp.csr_matrix((np.asarray(tfs, np.float64), (rows, cols)), shape=(n, v))
        df = np.bincount(np.asarray(cols, np.int64), minlength=v)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        lengths = np.asarray(lengths, np.float64)
        avgdl = lengths.mean() if n and lengths.mean() > 0 else 1.0
        norm = self.k1 * (1.0 - self.b + self.b * lengths / avgdl)  # [N]
        tf.data = self.idf[tf.indices] * tf.data * (self.k1 + 1.0) / (tf.data + np.repeat(norm, np.diff(tf.indptr)))
        self.terms = tf
        return self

    def query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """[Q, V] token counts of the queries (unknown tokens dropped)."""
        rows, cols = [], []
        for i, q in enumerate(queries):
            for token in tokenize(q):
                if token in self.vocabulary:
                    rows.append(i)
                    cols.append(self.vocabulary[token])
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(queries), len(self.vocabulary)))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """float64 [Q, N] BM25 scores."""
        if self.terms is None:
            raise RuntimeError("BM25Retriever: call fit(catalog) first")
        return np.asarray((self.query_matrix(queries) @ self.terms.T).toarray())

    def rank(self, queries: Sequence[str], k: int, chunk_size: int = 256) -> np.ndarray:
        out = [_rank_scores(self.scores(queries[i:i + chunk_size]), k) for i in range(0, len(queries), chunk_size)]
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)


class DenseRetriever:
    """Sentence-encoder embeddings of `track_text` (L2-normalised) -> cosine nearest neighbours of the query's.

    `cache_dir`: the catalog embeddings are saved there as dense_<encoder>_<texts sha256[:16]>.npy and reused
    while the encoder and the texts are unchanged."""

    def __init__(self, encoder: str | TextEncoder = "all-MiniLM-L6-v2", batch_size: int = 128,
                 cache_dir: str | Path | None = None, device: str = "cpu"):
        self.encoder = encoder if isinstance(encoder, TextEncoder) else TextEncoder(encoder, device, batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.embeddings: np.ndarray | None = None  # float32 [N, d]

    def cache_path(self, texts: Sequence[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.encoder.name)
        return self.cache_dir / f"dense_{name}_{digest}.npy"

    def fit(self, catalog: str | Path | pa.Table | Sequence[dict] | None = None, texts: Sequence[str] | None = None
            ) -> DenseRetriever:
        texts = [track_text(r) for r in catalog_records(catalog)] if texts is None else list(texts)
        path = self.cache_path(texts)
        if path is not None and path.exists():
            self.embeddings = np.load(path)
            return self
        self.embeddings = self.encoder.encode(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, self.embeddings)
            tmp.replace(path)
        return self

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, N] cosine similarities."""
        if self.embeddings is None:
            raise RuntimeError("DenseRetriever: call fit(catalog) first")
        return self.encoder.encode(list(queries)) @ self.embeddings.T

    def rank(self, queries: Sequence[str], k: int, chunk_size: int = 256) -> np.ndarray:
        out = [_rank_scores(self.scores(queries[i:i + chunk_size]), k) for i in range(0, len(queries), chunk_size)]
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)


TEXT_SEARCHES = ("bm25", "dense")


class CatalogTextSearch:
    """Named text retrievers (TEXT_SEARCHES) fitted on one catalog: requests -> per retriever the track IDs of each
    request's top `depth`, best first."""

    def __init__(self, catalog: str | Path | pa.Table, names: Sequence[str], device: str = "cpu",
                 cache_dir: str | Path | None = None):
        unknown = [n for n in names if n not in TEXT_SEARCHES]
        if unknown or not names:
            raise ValueError(f"text retrievers {list(names)}: expected one or more of {TEXT_SEARCHES}")
        table = pq.read_table(catalog) if isinstance(catalog, (str, Path)) else catalog
        self.track_ids = table.column("track_id").to_pylist()
        self.retrievers = {n: BM25Retriever().fit(table) if n == "bm25" else
                           DenseRetriever(device=device, cache_dir=cache_dir).fit(table) for n in names}

    def rank(self, queries: Sequence[str], depth: int) -> dict[str, list[list[str]]]:
        return {n: [[self.track_ids[r] for r in row if r >= 0] for row in r.rank(list(queries), depth)]
                for n, r in self.retrievers.items()}
