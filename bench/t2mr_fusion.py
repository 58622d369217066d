"""Reciprocal-rank fusion of several T2MR systems' deep rankings (the generative run, BM25, dense) -> P@10 of every
combination, pooled over request sets (validation folds), with paired intervals against a reference system.

    python -m bench.t2mr_fusion \
        --sets runs/t2mr_fusion/f1/t2mr.json=runs/spotify_val_f1/splits/playlists_eval.jsonl ... \
        --systems "gen=text_album_mention_dz256 w/o modality selection" bm25=BM25 "dense=Dense (MiniLM)"

Each t2mr.json comes from `music3m-t2mr --k DEPTH` (its ranked_track_ids, DEPTH deep, are what is fused), scored on
the playlists file given beside it. A track at rank r (from 1) of a system's list adds 1 / (rrf_k + r) to its score;
the fused list is sorted by score. The relevant tracks are read as music3m-t2mr reads them (eval.t2mr.load_queries
over the run's catalog), and the requests must be the ones the t2mr.json scored, in its order.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench.t2mr_pool import show, table
from common.config import parse_config
from eval.metrics import bootstrap_ci
from eval.t2mr import load_queries
from inference.retrieval import reciprocal_rank_fusion as rrf


@dataclass
class FusionConfig:
    """P@10 of reciprocal-rank fusions of T2MR systems, pooled over request sets."""

    sets: list[str] = field(metadata={"help": "T2MR_JSON=PLAYLISTS pairs: a music3m-t2mr result and its playlists"})
    systems: list[str] = field(metadata={
        "help": "ALIAS=LABEL pairs: the systems to fuse (their labels in every t2mr.json), e.g. bm25=BM25"})
    reference: str = field(default="bm25", metadata={"help": "alias the paired differences are taken against"})
    rrf_k: float = field(default=60.0, metadata={"help": "reciprocal-rank constant: a rank r adds 1 / (rrf_k + r)"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    out: str | None = field(default=None, metadata={"help": "also write the table (markdown) here"})


def _pairs(specs: list[str], what: str) -> list[tuple[str, str]]:
    pairs = [spec.partition("=")[::2] for spec in specs]
    bad = [s for s, (a, b) in zip(specs, pairs) if not a or not b]
    if bad:
        raise SystemExit(f"--{what}: expected NAME=VALUE, got {bad[0]!r}")
    return pairs


def fused_precision(result: str | Path, playlists: str | Path, systems: list[tuple[str, str]], rrf_k: float = 60.0,
                    k: int = 10) -> dict[str, list[float]]:
    """One request set -> {"a+b": P@k per request} for every non-empty combination of the systems (the table: k 10)."""
    data = json.loads(Path(result).read_text())
    catalog = Path(data["config"]["run_dir"]) / "catalog.parquet"
    track_ids = pq.read_table(catalog, columns=["track_id"]).column("track_id").to_pylist()
    names, relevant, _ = load_queries(playlists, track_ids)
    if names != data["query_texts"]:
        raise SystemExit(f"{result}: its requests are not those of {playlists} (score that file with music3m-t2mr)")
    lists = {}
    for alias, label in systems:
        system = data["systems"].get(label)
        if system is None or "ranked_track_ids" not in system:
            raise SystemExit(f"{result}: no ranking of system {label!r} (have: {', '.join(data['systems'])})")
        lists[alias] = system["ranked_track_ids"]
    wanted = [{track_ids[r] for r in rows} for rows in relevant]
    out = {}
    for n in range(1, len(systems) + 1):
        for combo in itertools.combinations([a for a, _ in systems], n):
            out["+".join(combo)] = [len(set(rrf([lists[a][i] for a in combo], rrf_k)[:k]) & wanted[i]) / k
                                    for i in range(len(names))]
    return out


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(FusionConfig, argv)
    systems = _pairs(cfg.systems, "systems")
    if cfg.reference not in {a for a, _ in systems}:
        raise SystemExit(f"--reference {cfg.reference!r} is none of the --systems aliases")
    per: dict[str, list[float]] = {}
    for result, playlists in _pairs(cfg.sets, "sets"):
        for combo, values in fused_precision(result, playlists, systems, cfg.rrf_k).items():
            per.setdefault(combo, []).extend(values)
    ref = np.asarray(per[cfg.reference])
    pooled = {combo: {"requests": len(v), "files": len(cfg.sets), "P@10": float(np.mean(v)),
                      "P@10 95% CI": bootstrap_ci(np.asarray(v), seed=cfg.seed),
                      **({} if combo == cfg.reference else
                         {f"P@10 - {cfg.reference} 95% CI": bootstrap_ci(np.asarray(v), ref, seed=cfg.seed)})}
              for combo, v in per.items()}
    show(table(pooled, cfg.reference), cfg.out)

if __name__ == "__main__":
    main()
