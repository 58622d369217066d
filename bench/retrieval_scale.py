"""Top-10 retrieval for one generated code sequence over a synthetic 1.6M-track token database: ms per query.

    python bench/retrieval_scale.py                      # 1.6M tracks, 200 queries per case
    python bench/retrieval_scale.py --num_tracks 200000 --num_queries 50 --out runs/bench/retrieval_scale.json

The database has the nine modalities with the paper's codebooks (32, 64, 128) and codes shaped like real ones:
tracks fall into latent clusters of Zipf-distributed size, each cluster prefers one code per (modality, level),
and a track keeps the preferred code with a probability that falls with the level (otherwise it draws a Zipf
level-1 code or a uniform deeper code); ~10% of the rows of each modality are missing. Queries are either a random
track's codes ("track") or, per modality, the codes of a different random track ("valid": each modality's prefix
exists in the catalog, as in catalog-valid decoding, but the modalities rarely agree on a track), each with equal
weights and with random positive weights (what the modality-relevance model produces).

Three ways to answer the same query, timed in the same run and checked for identical rows and scores:
`search_codes` (inference/matching.py, pruned), the dense posting-list path it falls back to (score every track, then
top_k), and a vectorised numpy scan of the code arrays (brute force). Reported: median and p95 ms per query of
CPU time of the calling thread (all three are single-threaded numpy; on a machine shared with other jobs wall time
measures the neighbours too), with the wall-clock median beside it.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from common.config import parse_config
from common.registry import DEFAULT_CODEBOOK_SIZES, MODALITY_NAMES
from eval.common import markdown_table, write_json
from inference.matching import HierarchicalIndex, top_k
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING


@dataclass
class RetrievalScaleConfig:
    """Time top-k retrieval of generated code sequences over a synthetic token database."""

    num_tracks: int = field(default=1_600_000, metadata={"help": "tracks in the synthetic token database (issue 6)"})
    num_queries: int = field(default=200, metadata={"help": "queries per (query kind, weights) case"})
    k: int = field(default=10, metadata={"help": "tracks returned per query"})
    num_clusters: int = field(default=4096, metadata={"help": "latent track clusters that correlate the codes"})
    zipf: float = field(default=1.0, metadata={"help": "Zipf exponent of cluster sizes and of level-1 codes"})
    keep: list[float] = field(default_factory=lambda: [0.7, 0.5, 0.3], metadata={
        "help": "per level: probability that a track keeps its cluster's preferred code"})
    missing: float = field(default=0.1, metadata={"help": "share of missing rows per modality"})
    seed: int = field(default=0, metadata={"help": "seed of the database and the queries"})
    out: str | None = field(default=None, metadata={"help": "write the results as JSON here"})


def zipf_probs(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf(s) probabilities over n items, in a random order (the popular codes are not always code 0)."""
    p = 1.0 / np.arange(1, n + 1) ** s
    return rng.permutation(p / p.sum())


def synthetic_db(cfg: RetrievalScaleConfig) -> TokenDB:
    rng = np.random.default_rng(cfg.seed)
    n = cfg.num_tracks
    cluster = rng.choice(cfg.num_clusters, n, p=zipf_probs(cfg.num_clusters, cfg.zipf, rng))
    codes = {}
    for m in MODALITY_NAMES:
        c = np.empty((n, len(DEFAULT_CODEBOOK_SIZES)), np.int16)
        for level, size in enumerate(DEFAULT_CODEBOOK_SIZES):
            p = zipf_probs(size, cfg.zipf, rng) if level == 0 else np.full(size, 1.0 / size)
            preferred = rng.choice(size, cfg.num_clusters, p=p)
            own = rng.choice(size, n, p=p)
            c[:, level] = np.where(rng.random(n) < cfg.keep[level], preferred[cluster], own)
        c[rng.random(n) < cfg.missing] = MISSING
        codes[m] = c
    sizes = {m: DEFAULT_CODEBOOK_SIZES for m in MODALITY_NAMES}
    return TokenDB([str(i) for i in range(n)], sizes, codes)


def queries(db: TokenDB, kind: str, count: int, rng: np.random.Generator) -> list[dict[str, list[int]]]:
    """`count` code sequences {modality: codes}; missing modalities are left out, as a generated sequence does."""
    present = {m: np.flatnonzero(db.presence(m)) for m in db.modalities}
    out = []
    for _ in range(count):
        if kind == "track":
            t = int(rng.integers(db.num_tracks))
            out.append({m: db.codes[m][t].tolist() for m in db.modalities if db.codes[m][t, 0] != MISSING})
        else:
            out.append({m: db.codes[m][int(rng.choice(present[m]))].tolist() for m in db.modalities})
    return out


def full_scan(db: TokenDB, codes: dict[str, list[int]], weights: dict[str, float] | None, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: compare every track's codes with the query, level by level, summing in `codes` order."""
    scores = np.zeros(db.num_tracks)
    for m, q in codes.items():
        w = 1.0 if weights is None else weights[m]
        match = np.ones(db.num_tracks, bool)
        for level, code in enumerate(q):
            match &= db.codes[m][:, level] == code
            scores += np.where(match, w, 0.0)
    rows = top_k(scores[None, :], k, integer_scores=weights is None)[0]
    return rows, scores[rows]


def timed(fn, *args) -> tuple[float, float, tuple[np.ndarray, np.ndarray]]:
    """-> (wall ms, CPU ms of this thread, result). On a shared machine the CPU time is the one to compare."""
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return (time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3, out


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(RetrievalScaleConfig, argv)
    start = time.perf_counter()
    db = synthetic_db(cfg)
    made = time.perf_counter()
    index = HierarchicalIndex.from_token_db(db)
    built = time.perf_counter()
    # what the first search builds: level-1 posting bitmaps and per-modality code arrays
    extra = index._level1_bitmaps()[0].nbytes + sum(index._codes(m).nbytes for m in index.modalities)
    ready = time.perf_counter()
    print(f"{db.num_tracks:,} tracks, {index.X.nnz:,} prefix entries, {index.X.shape[1]:,} prefix columns; "
          f"data {made - start:.1f} s, index {built - made:.1f} s, search structures {ready - built:.1f} s "
          f"({extra / 2**20:.0f} MiB)")
    rng = np.random.default_rng(cfg.seed + 1)
    ways = {"search_codes (pruned)": index.search_codes,
            "dense posting lists": lambda c, w, k: index._search_dense(c, w, k, np.zeros(0, np.int64)),
            "numpy full scan": lambda c, w, k: full_scan(db, c, w, k)}
    rows, results = [], []
    for kind in ("track", "valid"):
        for weighting in ("equal", "random"):
            times = {name: [] for name in ways}
            cpu_times = {name: [] for name in ways}
            for codes in queries(db, kind, cfg.num_queries, rng):
                weights = None if weighting == "equal" else {m: float(rng.uniform(0.2, 2.0)) for m in db.modalities}
                answers = {}
                for name, fn in ways.items():
                    ms, cpu_ms, answers[name] = timed(fn, codes, weights, cfg.k)
                    times[name].append(ms)
                    cpu_times[name].append(cpu_ms)
                ref_rows, ref_scores = answers["numpy full scan"]
                for name, (r, s) in answers.items():
                    if r.tolist() != ref_rows.tolist() or s.tobytes() != ref_scores.tobytes():
                        raise AssertionError(f"{name} differs from the full scan on a {kind}/{weighting} query")
            stats = {name: (float(np.median(t)), float(np.percentile(t, 95))) for name, t in times.items()}
            cpu = {name: (float(np.median(t)), float(np.percentile(t, 95))) for name, t in cpu_times.items()}
            fast, brute = cpu["search_codes (pruned)"][0], cpu["numpy full scan"][0]
            results.append({"query": kind, "weights": weighting, "wall_ms": stats, "cpu_ms": cpu,
                            "cpu_speedup_vs_full_scan": brute / fast})
            rows.append([kind, weighting] + [f"{cpu[n][0]:.2f} / {cpu[n][1]:.2f} ({stats[n][0]:.1f})" for n in ways]
                        + [f"{brute / fast:.0f}x"])
    headers = (["query", "weights"] + [f"{name}: CPU ms median / p95 (wall median)" for name in ways]
               + ["full scan / pruned (CPU)"])
    print(f"top-{cfg.k} over {db.num_tracks:,} tracks, {cfg.num_queries} queries per row, identical rows and "
          f"scores in all three ({platform.processor() or platform.machine()}):")
    print(markdown_table(headers, rows))
    report = {"config": asdict(cfg), "tracks": db.num_tracks, "prefix_entries": int(index.X.nnz),
              "index_build_s": built - made, "search_structures_s": ready - built, "search_structures_bytes": extra,
              "results": results}
    if cfg.out:
        write_json(cfg.out, report)
    return report


if __name__ == "__main__":
    main()
