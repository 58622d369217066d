"""Content-based retrieval (3MToken Sec. 3, Tables 1, 3, 4): token database + playlists -> Precision/Recall/Hit@k.

    music3m-eval-cbr --tokenizer_dir runs/spotify/tokenizers/rqvae --playlists runs/spotify/splits/playlists_eval.jsonl

A seed track's relevant set is its playlist's other tracks; the ranking is weighted hierarchical matching
(inference.matching). Rows: all modalities, each alone (Table 3), all but one (Table 4), and a dense reference.
Writes <tokenizer_dir>/eval/cbr.json and prints a markdown table naming the playlists that fed the features.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import parse_config
from common.registry import parse_modalities
from data_gen.catalog.playlists import Playlist, read_playlists
from data_gen.vectorize.embeddings import EmbeddingStore
from eval.common import (
    default_out,
    feature_provenance,
    input_record,
    load_test_split,
    markdown_table,
    provenance_line,
    resolve_run_dir,
    result_header,
    write_json,
)
from eval.metrics import METRICS, ranking_metrics
from inference.matching import SCORE_CHUNK_BYTES, HierarchicalIndex, top_k
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import JOINT_GROUPS, get_group


@dataclass
class CBRConfig:
    """Content-based retrieval: seed track -> other tracks of its playlist (3MToken Tables 1, 3, 4)."""

    tokenizer_dir: str = field(metadata={"help": "tokenizer directory with token_db.parquet (tokenizer_ext.train)"})
    playlists: str = field(metadata={
        "help": "playlists JSONL whose co-membership is the ground truth; use the evaluation split "
                "(data_gen.catalog.split) so that no feature was built from it"})
    k: list[int] = field(default_factory=lambda: [5, 10, 20, 50], metadata={"help": "cut-offs k (3MToken Table 1)"})
    max_seeds: int = field(default=2000, metadata={"help": "(playlist, seed track) pairs sampled; <= 0 = all"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    modalities: str = field(default="all", metadata={"help": "comma-separated modalities to use, or 'all'"})
    weights: str = field(default="", metadata={
        "help": "per-modality weights 'BM=1,TC=2' (unlisted modalities keep 1); empty = equal weights "
                "(3MToken Appendix C)"})
    run_dir: str | None = field(default=None, metadata={
        "help": "run directory with embeddings/ for the dense row and the feature provenance "
                "(default: the one recorded in tokenizer.json)"})
    dense: bool = field(default=True, metadata={"help": "add the dense cosine nearest-neighbour row"})
    test_tracks_only: bool = field(default=False, metadata={
        "help": "restrict seeds, candidates and relevant tracks to the tokenizer's test tracks "
                "(3MToken Appendix C evaluates on test tracks only)"})
    chunk_size: int | None = field(default=None, metadata={"help": "seeds per dense score chunk (default: auto)"})
    out: str | None = field(default=None, metadata={"help": "output JSON (default TOKENIZER_DIR/eval/cbr.json)"})


@dataclass
class Seeds:
    rows: np.ndarray  # int64 [S] catalog rows of the seeds
    relevant: list[np.ndarray]  # per seed: catalog rows of the other tracks of its playlist
    counts: dict


def parse_weights(spec: str, modalities: Sequence[str]) -> dict[str, float]:
    """'BM=1,TC=2' -> {group: w} over `modalities` (modalities and joint groups such as SH), unlisted ones 1.0."""
    weights = {m: 1.0 for m in modalities}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.partition("=")
        if not value:
            raise ValueError(f"--weights: expected MOD=value, got {item!r}")
        weights[get_group(name.strip())] = float(value)
    return {m: w for m, w in weights.items() if m in modalities}


def sample_seeds(db: TokenDB, playlists: list[Playlist], max_seeds: int, seed: int) -> Seeds:
    """Every catalog track of a playlist with >= 2 catalog tracks is a seed candidate; sample `max_seeds` pairs."""
    row_of = db.row_of()
    members: list[np.ndarray] = []
    pair_playlist, pair_row = [], []
    skipped = missing = 0
    for p in playlists:
        rows = [row_of[t] for t in p.tracks if t in row_of]
        missing += len(p.tracks) - len(rows)
        if len(rows) < 2:
            skipped += 1
            continue
        members.append(np.asarray(rows, dtype=np.int64))
        pair_playlist += [len(members) - 1] * len(rows)
        pair_row += rows
    pair_playlist, pair_row = np.asarray(pair_playlist, np.int64), np.asarray(pair_row, np.int64)
    n_pairs = len(pair_row)
    take = n_pairs if max_seeds <= 0 else min(max_seeds, n_pairs)
    pick = np.sort(np.random.default_rng(seed).choice(n_pairs, size=take, replace=False))
    rows = pair_row[pick]
    relevant = [members[pair_playlist[i]][members[pair_playlist[i]] != pair_row[i]] for i in pick]
    counts = {"catalog_tracks": db.num_tracks, "playlists": len(playlists), "playlists_skipped_lt2_tracks": skipped,
              "playlists_eligible": len(members), "playlists_used": int(len(np.unique(pair_playlist[pick]))),
              "playlist_tracks_not_in_catalog": missing, "seed_candidates": n_pairs, "seeds": take}
    return Seeds(rows, relevant, counts)


def subset_db(db: TokenDB, keep: np.ndarray) -> TokenDB:
    rows = np.flatnonzero(keep)
    return TokenDB([db.track_ids[i] for i in rows], db.codebook_sizes, {m: c[rows] for m, c in db.codes.items()},
                   db.tokenizer, None if db.dedup is None else db.dedup[rows], dict(db.meta))


def dense_rank(store: EmbeddingStore, modalities: Sequence[str], track_ids: Sequence[str], seed_rows: np.ndarray,
               k: int, chunk_size: int | None = None, block_bytes: int = 256 << 20) -> np.ndarray:
    """Cosine nearest neighbours over [L2-normalised modality embeddings, concatenated; missing ones = 0].

    Streams the memory-mapped matrices in catalog blocks of about `block_bytes`, so only a [seeds, N] score chunk
    and one block are held. -> int64 [S, k] rows (seed excluded, ties to the lower row)."""
    store_row = {t: i for i, t in enumerate(store.track_ids)}
    idx = np.fromiter((store_row.get(t, -1) for t in track_ids), dtype=np.int64, count=len(track_ids))
    mods = [m for m in modalities if m in store.modalities()]
    matrices = {m: store.load(m) for m in mods}
    n = len(track_ids)
    presence = {}
    for m in mods:
        presence[m] = (idx >= 0) & np.asarray(store.presence(m))[np.maximum(idx, 0)]
    norm = np.sqrt(sum(presence[m].astype(np.float64) for m in mods))  # |concatenated unit vectors|
    norm[norm == 0] = 1.0

    def unit_rows(rows: np.ndarray) -> np.ndarray:
        """Catalog rows -> float32 [len(rows), sum of dims]: per-modality unit vectors side by side, 0 if missing."""
        parts = []
        for m in mods:
            out = np.zeros((len(rows), matrices[m].shape[1]), np.float32)
            ok = presence[m][rows]
            if ok.any():
                x = np.asarray(matrices[m][idx[rows[ok]]], dtype=np.float32)
                out[ok] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            parts.append(out)
        return np.concatenate(parts, axis=1)

    dim = sum(matrices[m].shape[1] for m in mods)
    block_rows = max(1, block_bytes // (4 * max(1, dim)))
    k = min(k, n - 1)
    chunk = chunk_size or max(1, min(1024, 4 * SCORE_CHUNK_BYTES // max(1, 4 * n)))  # float32 [chunk, N], 128 MB
    ranked = np.zeros((len(seed_rows), k), np.int64)
    for start in range(0, len(seed_rows), chunk):
        q_rows = seed_rows[start:start + chunk]
        q = unit_rows(q_rows)
        scores = np.empty((len(q_rows), n), np.float32)
        for b0 in range(0, n, block_rows):
            b1 = min(n, b0 + block_rows)
            np.matmul(q, unit_rows(np.arange(b0, b1)).T, out=scores[:, b0:b1])
        scores /= norm[q_rows, None] * norm[None, :]
        scores[np.arange(len(q_rows)), q_rows] = -np.inf
        ranked[start:start + len(q_rows)] = top_k(scores, k)
    return ranked


def retrieval_rows(modalities: Sequence[str], weights: dict[str, float]) -> list[dict]:
    """The rows of Tables 1/3/4: multimodal, unimodal per modality, leave-one-modality-out."""
    rows = [{"name": "multimodal", "kind": "multimodal", "modalities": list(modalities), "weights": dict(weights)}]
    if len(modalities) > 1:
        for m in modalities:
            rows.append({"name": f"only {m}", "kind": "unimodal", "modalities": [m], "weights": {m: weights[m]}})
        for m in modalities:
            rest = [x for x in modalities if x != m]
            rows.append({"name": f"without {m}", "kind": "leave-one-out", "modalities": rest,
                         "weights": {x: weights[x] for x in rest}})
    return rows


def run(cfg: CBRConfig) -> dict:
    t_start = time.perf_counter()
    tokenizer_dir = Path(cfg.tokenizer_dir)
    db = TokenDB.load(tokenizer_dir)
    split_source = None
    if cfg.test_tracks_only:
        is_test, split_source = load_test_split(tokenizer_dir, db.track_ids)
        db = subset_db(db, is_test)
    wanted = set(parse_modalities(cfg.modalities)) | set(JOINT_GROUPS)  # joint groups (SH, FU, ...) always take part
    mods = tuple(m for m in db.modalities if m in wanted)
    if not mods:
        raise ValueError(f"none of {sorted(wanted)} is in the token database ({', '.join(db.modalities)})")
    weights = parse_weights(cfg.weights, mods)
    ks = sorted(set(int(k) for k in cfg.k))
    playlists = read_playlists(cfg.playlists)
    seeds = sample_seeds(db, playlists, cfg.max_seeds, cfg.seed)
    if not len(seeds.rows):
        raise ValueError(f"{cfg.playlists}: no playlist has 2 or more tracks in the token database")
    index = HierarchicalIndex.from_token_db(db, mods)

    results = []
    for row in retrieval_rows(mods, weights):
        t0 = time.perf_counter()
        row_weights = {m: row["weights"].get(m, 0.0) for m in mods}  # groups outside the row weigh 0, joint ones too
        ranked = index.rank_rows(seeds.rows, row_weights, k=max(ks), exclude_self=True, chunk_size=cfg.chunk_size)
        results.append({**row, "metrics": ranking_metrics(ranked, seeds.relevant, ks),
                        "seconds": round(time.perf_counter() - t0, 3)})

    run_dir = resolve_run_dir(tokenizer_dir, cfg.run_dir)
    if cfg.dense and run_dir is not None and (run_dir / "embeddings" / "tracks.parquet").exists():
        t0 = time.perf_counter()
        store = EmbeddingStore(run_dir)
        dense_mods = [m for m in mods if m in store.modalities()]
        ranked = dense_rank(store, dense_mods, db.track_ids, seeds.rows, max(ks), cfg.chunk_size)
        results.append({"name": "dense", "kind": "dense", "modalities": dense_mods, "weights": None,
                        "metrics": ranking_metrics(ranked, seeds.relevant, ks),
                        "seconds": round(time.perf_counter() - t0, 3)})

    eval_ids = {p.playlist_id for p in playlists}
    return {**result_header("cbr", cfg),
            "inputs": {"token_db": input_record(tokenizer_dir / "token_db.parquet"),
                       "playlists": input_record(cfg.playlists)},
            "tokenizer": db.tokenizer, "modalities": list(mods), "weights": weights, "k": ks,
            "test_split": split_source, "run_dir": str(run_dir) if run_dir else None,
            "feature_provenance": feature_provenance(run_dir, eval_ids),
            "counts": seeds.counts, "rows": results, "wall_time_s": round(time.perf_counter() - t_start, 3)}


def report_markdown(result: dict) -> str:
    ks = result["k"]
    headers = ["row", *(f"{short}@{k}" for short in ("P", "R", "Hit") for k in ks)]
    table = [[r["name"], *(r["metrics"][f"{metric}@{k}"] for metric in METRICS for k in ks)] for r in result["rows"]]
    c = result["counts"]
    lines = [f"Content-based retrieval ({result['tokenizer']} tokens, modalities {','.join(result['modalities'])}, "
             f"playlists {result['inputs']['playlists']['path']})", "", markdown_table(headers, table), "",
             f"seeds: {c['seeds']:,} of {c['seed_candidates']:,} candidates from {c['playlists_used']:,} playlists "
             f"({c['playlists_skipped_lt2_tracks']:,} skipped: < 2 catalog tracks); catalog {c['catalog_tracks']:,} "
             f"tracks; wall time {result['wall_time_s']:.1f} s",
             f"features: {provenance_line(result['feature_provenance'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(CBRConfig, argv)
    result = run(cfg)
    out = write_json(cfg.out or default_out(cfg.tokenizer_dir, "cbr"), result)
    print(report_markdown(result))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
