"""Ranking metrics: ranked lists + relevant sets -> Precision@k, Recall@k, Hit@k (3MToken Sec. 3, Appendix C).

For one query with ranking r and relevant set R (the query itself never in either):
    Precision@k = |r[:k] & R| / k      Recall@k = |r[:k] & R| / |R|      Hit@k = 1 if r[:k] & R else 0
Reported numbers are means over queries. The single-query functions are the readable definitions; `ranking_metrics`
computes the same for a [queries, K] matrix of rankings at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METRICS = ("precision", "recall", "hit")


def precision_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    return sum(1 for x in list(ranked)[:k] if x in relevant) / k


def recall_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for x in list(ranked)[:k] if x in relevant) / len(relevant)


def hit_at_k(ranked: Sequence, relevant: set, k: int) -> float:
    return float(any(x in relevant for x in list(ranked)[:k]))


def hit_matrix(ranked: np.ndarray, relevant: Sequence[Iterable[int]]) -> np.ndarray:
    """int [B, K] ranked rows (-1 = padding) + B relevant row sets -> bool [B, K]: is ranked[i, j] relevant to i."""
    ranked = np.asarray(ranked, dtype=np.int64)
    b = ranked.shape[0]
    if len(relevant) != b:
        raise ValueError(f"{b} rankings but {len(relevant)} relevant sets")
    rel = [np.unique(np.fromiter(r, dtype=np.int64)) for r in relevant]
    stride = int(max(ranked.max(initial=0), max((int(r.max()) for r in rel if len(r)), default=0))) + 1
    rel_keys = np.concatenate([i * stride + r for i, r in enumerate(rel)]) if b else np.zeros(0, np.int64)
    keys = np.arange(b, dtype=np.int64)[:, None] * stride + ranked  # pair (query, row) as one integer
    return np.isin(keys, rel_keys) & (ranked >= 0)


def ranking_metrics(ranked: np.ndarray, relevant: Sequence[Iterable[int]], ks: Sequence[int]) -> dict[str, float]:
    """Mean Precision/Recall/Hit@k over queries -> {'precision@5': ..., 'recall@5': ..., 'hit@5': ..., ...}.

    Every query needs a non-empty relevant set (recall is undefined otherwise). Rankings shorter than k count the
    missing positions as misses (precision still divides by k)."""
    ranked = np.asarray(ranked, dtype=np.int64)
    relevant = [list(r) for r in relevant]
    sizes = np.array([len(set(r)) for r in relevant], dtype=np.float64)
    if (sizes == 0).any():
        raise ValueError("every query needs at least one relevant item")
    hits = hit_matrix(ranked, relevant)
    found = np.cumsum(hits, axis=1) if hits.shape[1] else np.zeros((len(relevant), 0), np.int64)
    out: dict[str, float] = {}
    for k in ks:
        n_found = found[:, min(k, found.shape[1]) - 1] if found.shape[1] else np.zeros(len(relevant))
        out[f"precision@{k}"] = float(np.mean(n_found / k)) if len(sizes) else 0.0
        out[f"recall@{k}"] = float(np.mean(n_found / sizes)) if len(sizes) else 0.0
        out[f"hit@{k}"] = float(np.mean(n_found > 0)) if len(sizes) else 0.0
    return out


def ndcg_at_k(ranked: np.ndarray, relevant: Sequence[Iterable[int]], k: int) -> float:
    """Mean binary-relevance nDCG@k: sum over hits of 1/log2(rank + 1), divided by the best possible sum
    (min(|R|, k) hits at the top). Every query needs a non-empty relevant set."""
    ranked = np.asarray(ranked, dtype=np.int64)[:, :k]
    relevant = [list(r) for r in relevant]
    sizes = np.array([len(set(r)) for r in relevant])
    if (sizes == 0).any():
        raise ValueError("every query needs at least one relevant item")
    if len(relevant) == 0:
        return 0.0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    hits = hit_matrix(ranked, relevant)
    dcg = (hits * discount[:hits.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(sizes, k) - 1]
    return float(np.mean(dcg / ideal))


def precision_per_query(ranked: np.ndarray, relevant: Sequence[Iterable[int]], k: int) -> np.ndarray:
    """float [B]: Precision@k of each query (the values `ranking_metrics` averages)."""
    return hit_matrix(np.asarray(ranked, dtype=np.int64)[:, :k], relevant).sum(axis=1) / k


def bootstrap_ci(values: np.ndarray, other: np.ndarray | None = None, n: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(values) (or, with `other`, of mean(values - other): a paired difference
    over the same queries), resampling queries with replacement."""
    x = np.asarray(values, dtype=np.float64) - (0.0 if other is None else np.asarray(other, dtype=np.float64))
    if x.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n, x.size))
    means = x[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)
