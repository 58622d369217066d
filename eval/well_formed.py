"""Does a fine-tuned model answer with track IDs? Greedy decoding of D_qt queries, with and without the logit mask.

    music3m-eval-well-formed --bundle SFT_DIR --dqt runs/spotify/dqt/dqt.parquet --split train --num_queries 100

Per decoding mode: the share of answers that are well-formed IDs, IDs of an existing catalog track, and the query's
own track.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np

from common.config import parse_config
from common.records import read_records
from inference.bundle import load_bundle
from inference.recommend import Recommender
from inference.retrieval import is_catalog_prefix, parse_sequence


@dataclass
class WellFormedConfig:
    """Share of well-formed greedy answers of a fine-tuned bundle on D_qt queries."""

    bundle: str = field(metadata={"help": "bundle directory (recipes/sft_3mtoken.py output) or Hub id"})
    dqt: str = field(metadata={"help": "D_qt file (track_id, query, split)"})
    split: str = field(default="train", metadata={"help": "which D_qt split the queries come from"})
    num_queries: int = field(default=100, metadata={"help": "queries (the first of the split, one per track)"})
    modes: list[str] = field(default_factory=lambda: ["none", "order", "catalog"], metadata={
        "help": "decoding masks: none (unconstrained), order, modality, catalog"})
    batch_size: int = field(default=16, metadata={"help": "queries per generate call"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    out: str | None = field(default=None, metadata={"help": "JSON report path"})


def select_queries(rows: list[dict], split: str, n: int) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        if r.get("split") == split and r["track_id"] not in seen:
            seen.add(r["track_id"])
            out.append(r)
            if len(out) == n:
                break
    return out


def run(cfg: WellFormedConfig) -> dict:
    bundle = load_bundle(cfg.bundle)
    db = bundle.token_db
    row_of = db.row_of()
    queries = select_queries(read_records(cfg.dqt), cfg.split, cfg.num_queries)
    if not queries:
        raise ValueError(f"{cfg.dqt}: no queries in split {cfg.split!r}")
    report = {"bundle": cfg.bundle, "split": cfg.split, "queries": len(queries), "modes": {}}
    for mode in cfg.modes:
        rec = Recommender(bundle, mode=mode, num_beams=1, device=cfg.device)
        gens = rec.generate([q["query"] for q in queries], batch_size=cfg.batch_size)
        parsed = [parse_sequence(g.beams[0], db) for g in gens]
        ok = np.array([p is not None for p in parsed])
        in_catalog = np.array([p is not None and is_catalog_prefix(p[0], db, p[1]) for p in parsed])
        own = np.array([p is not None and q["track_id"] in row_of
                        and all(db.codes[m][row_of[q["track_id"]]].tolist() == p[0][m] for m in db.modalities)
                        for p, q in zip(parsed, queries)])
        report["modes"][mode] = {"well_formed": float(ok.mean()), "existing_track": float(in_catalog.mean()),
                                 "own_track": float(own.mean()),
                                 "examples": [{"query": q["query"], "answer": "".join(g.beams[0])}
                                              for q, g in zip(queries[:3], gens[:3])]}
        print(f"{mode}: well-formed {ok.mean():.3f}, existing track {in_catalog.mean():.3f}, "
              f"own track {own.mean():.3f} ({len(queries)} {cfg.split} queries)", file=sys.stderr)
    if cfg.out:
        with open(cfg.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
    return report


def main(argv: list[str] | None = None) -> None:
    report = run(parse_config(WellFormedConfig, argv))
    print("| decoding | well-formed | existing track | the query's own track |\n|---|---|---|---|")
    for mode, r in report["modes"].items():
        print(f"| {mode} | {r['well_formed']:.3f} | {r['existing_track']:.3f} | {r['own_track']:.3f} |")


if __name__ == "__main__":
    main()
