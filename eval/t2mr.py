"""Text-to-music retrieval (T2MR, 3MTokenRec Sec. 3.4): playlist names as requests, the playlists' tracks as the
relevant sets, every system ranked on the same queries.

    python -m eval.t2mr --run_dir runs/spotify_bench --playlists runs/spotify_bench/splits/playlists_eval.jsonl \
        --bundles 3MTokenRec=runs/spotify_bench/sft/rqvae KmeansRec=runs/spotify_bench/sft/kmeans \
        --relevance runs/spotify_llm/relevance --out_dir runs/spotify_bench/t2mr

Systems: each bundle (an SFT output) with modality selection (relevance-model weights) and without it (equal
weights); the first bundle's unimodal variants (one modality's weight 1, the rest 0, on the same generated codes);
and the text baselines of eval.baselines: BM25 and dense retrieval over each track's metadata, and ArtistTrackName
(the base LLM names songs, resolved by fuzzy matching). Metrics: Precision@1..10, Recall@10, Hit@10, nDCG@10.
Writes OUT_DIR/t2mr.json, t2mr.md and t2mr_precision.png.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_gen.config import parse_config
from eval.common import markdown_table, write_json
from eval.metrics import ndcg_at_k, ranking_metrics

KS = tuple(range(1, 11))


@dataclass
class T2MRConfig:
    """Text-to-music retrieval evaluation over the playlists of the evaluation split."""

    run_dir: str = field(metadata={"help": "run directory with catalog.parquet"})
    playlists: str = field(metadata={"help": "evaluation playlists JSONL (playlist_id, name, tracks)"})
    out_dir: str = field(metadata={"help": "where t2mr.json / .md / .png go"})
    bundles: list[str] = field(default_factory=list, metadata={
        "help": "NAME=DIR pairs of trained bundles; the first also gets the unimodal variants"})
    relevance: str | None = field(default=None, metadata={
        "help": "modality-relevance model dir, or a relevance_scores.json written by an earlier run"})
    merge: list[str] = field(default_factory=list, metadata={
        "help": "t2mr.json files of earlier runs on the same queries (e.g. the bundles' run on a GPU machine): "
                "their systems join this table"})
    baselines: list[str] = field(default_factory=lambda: ["bm25", "dense", "artist_track_name"], metadata={
        "help": "text baselines: bm25, dense, artist_track_name, or none"})
    unimodal: bool = field(default=True, metadata={"help": "add the first bundle's unimodal variants"})
    base_model: str = field(default="smollm2", metadata={"help": "base LLM of ArtistTrackName"})
    mode: str = field(default="catalog", metadata={"help": "decoding mask of the bundles"})
    num_beams: int = field(default=4, metadata={"help": "beams per request"})
    k: int = field(default=10, metadata={"help": "ranking depth"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    batch_size: int = field(default=16, metadata={"help": "requests per generate call"})


def load_queries(playlists: str | Path, track_ids: list[str]) -> tuple[list[str], list[list[int]], dict]:
    """Playlists JSONL -> (names, relevant catalog rows per query, counts). Playlists with no catalog track are
    dropped and counted."""
    row_of = {t: i for i, t in enumerate(track_ids)}
    names, relevant, dropped, read = [], [], 0, 0
    with open(playlists, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            read += 1
            rec = json.loads(line)
            if not isinstance(rec.get("name"), str) or not rec["name"].strip():
                raise ValueError(f"{playlists}: row {line_no}: field 'name' missing or empty")
            rows = sorted({row_of[t] for t in rec.get("tracks", []) if t in row_of})
            if not rows:
                dropped += 1
                continue
            names.append(rec["name"])
            relevant.append(rows)
    return names, relevant, {"playlists_read": read, "queries": len(names), "dropped_no_catalog_track": dropped,
                             "mean_relevant": float(np.mean([len(r) for r in relevant])) if relevant else 0.0}


def score(ranked: np.ndarray, relevant: list[list[int]], k: int) -> dict:
    m = ranking_metrics(ranked, relevant, KS)
    out = {f"P@{i}": m[f"precision@{i}"] for i in KS}
    out.update({f"R@{k}": m[f"recall@{k}"], f"Hit@{k}": m[f"hit@{k}"], f"nDCG@{k}": ndcg_at_k(ranked, relevant, k)})
    return out


def _to_catalog_rows(rows_list, track_ids: list[str], row_of: dict[str, int], k: int) -> np.ndarray:
    out = np.full((len(rows_list), k), -1, dtype=np.int64)
    for i, rows in enumerate(rows_list):
        mapped = [row_of[track_ids[int(r)]] for r in rows if int(r) >= 0][:k]
        out[i, :len(mapped)] = mapped
    return out


def run(cfg: T2MRConfig) -> dict:
    from eval.recommend import Recommender
    from tokenizer_ext.bundle import load_bundle

    catalog = pq.read_table(Path(cfg.run_dir) / "catalog.parquet")
    track_ids = catalog.column("track_id").to_pylist()
    row_of = {t: i for i, t in enumerate(track_ids)}
    queries, relevant, counts = load_queries(cfg.playlists, track_ids)
    print(f"T2MR: {counts}", file=sys.stderr)
    systems: dict[str, dict] = {}
    rankings: dict[str, np.ndarray] = {}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relevance = _relevance(cfg, queries, out)

    for j, spec in enumerate(cfg.bundles):
        name, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--bundles: expected NAME=DIR, got {spec!r}")
        t0 = time.perf_counter()
        rec = Recommender(load_bundle(path), relevance, mode=cfg.mode, num_beams=cfg.num_beams, device=cfg.device)
        gens = rec.generate(queries, batch_size=cfg.batch_size)
        gen_s = time.perf_counter() - t0
        db_ids = rec.db.track_ids
        variants = {f"{name} w/o modality selection": None}
        if relevance is not None:
            variants = {name: rec.weights(queries), **variants}
        if j == 0 and cfg.unimodal:
            for m in rec.db.modalities:
                variants[f"{name} unimodal {m}"] = [{g: float(g == m) for g in rec.db.modalities}] * len(queries)
        for label, weights in variants.items():
            res = rec.rank(gens, weights, k=cfg.k)
            rankings[label] = _to_catalog_rows([r.rows for r in res], db_ids, row_of, cfg.k)
            systems[label] = {"kind": name, "bundle": path,
                              "well_formed_top_beam": float(rec.well_formed(gens).mean()),
                              "generate_seconds": round(gen_s, 1)}
        print(f"{name}: generated {len(queries)} x {cfg.num_beams} beams in {gen_s:.0f} s", file=sys.stderr)

    baselines = [b for b in cfg.baselines if b != "none"]
    if baselines:
        from eval import baselines as bl

        for b in baselines:
            t0 = time.perf_counter()
            if b == "bm25":
                label, system = "BM25", bl.BM25Retriever().fit(catalog)
            elif b == "dense":
                label, system = "Dense (MiniLM)", bl.DenseRetriever(device=cfg.device).fit(catalog)
            elif b == "artist_track_name":
                label, system = "ArtistTrackName", bl.ArtistTrackNameRetriever(model_name=cfg.base_model).fit(catalog)
            else:
                raise ValueError(f"unknown baseline {b!r} (bm25, dense, artist_track_name)")
            rankings[label] = _pad(system.rank(queries, cfg.k), cfg.k)
            systems[label] = {"kind": "baseline", "seconds": round(time.perf_counter() - t0, 1)}
            if getattr(system, "stats", None):
                systems[label]["resolution"] = system.stats

    for path in cfg.merge:
        other = json.loads(Path(path).read_text())
        if other["query_texts"] != queries:
            raise ValueError(f"{path}: its queries differ from {cfg.playlists}'s; merge only runs on the same queries")
        for label, s in other["systems"].items():
            rankings[label] = np.array([[row_of.get(t, -1) for t in r] for r in s["ranked_track_ids"]],
                                       dtype=np.int64).reshape(len(queries), -1)
            systems[label] = {k: v for k, v in s.items() if k not in ("metrics", "ranked_track_ids")} | {"from": path}

    for label, ranked in rankings.items():
        systems[label]["metrics"] = score(_pad(ranked, cfg.k), relevant, cfg.k)
        systems[label]["ranked_track_ids"] = [[track_ids[r] for r in row if r >= 0] for row in ranked]
    result = {"config": cfg.__dict__, "queries": counts, "query_texts": queries, "systems": systems}
    write_json(out / "t2mr.json", result)
    (out / "t2mr.md").write_text(report_markdown(result))
    plot_precision(result, out / "t2mr_precision.png")
    return result


class _ScoresFile:
    """Relevance scores computed earlier (relevance_scores.json: query -> nine scores), with the model's predict API."""

    def __init__(self, path: str | Path):
        self.path = path
        self.scores = json.loads(Path(path).read_text())

    def predict(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.scores]
        if missing:
            raise KeyError(f"{self.path}: no relevance scores for {len(missing)} queries, e.g. {missing[0]!r}")
        return np.asarray([self.scores[t] for t in texts], dtype=np.float32)


def _relevance(cfg: T2MRConfig, queries: list[str], out: Path):
    """The relevance model (or its saved scores); a loaded model's scores for these queries are saved to
    OUT_DIR/relevance_scores.json so that a machine without the model can reuse them."""
    if not cfg.relevance:
        return None
    if Path(cfg.relevance).is_file():
        return _ScoresFile(cfg.relevance)
    from data_gen.relevance import RelevanceModel

    model = RelevanceModel.load(cfg.relevance, device=cfg.device)
    scores = model.predict(queries)
    (out / "relevance_scores.json").write_text(json.dumps({q: [round(float(x), 4) for x in s]
                                                           for q, s in zip(queries, scores)}, indent=0))
    return model


def _pad(ranked: np.ndarray, k: int) -> np.ndarray:
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.shape[1] >= k:
        return ranked[:, :k]
    return np.pad(ranked, ((0, 0), (0, k - ranked.shape[1])), constant_values=-1)


def report_markdown(result: dict) -> str:
    k = result["config"]["k"]
    cols = ["P@1", "P@5", "P@10", f"R@{k}", f"Hit@{k}", f"nDCG@{k}"]
    rows = [[name, *(f"{s['metrics'][c]:.4f}" for c in cols)] for name, s in result["systems"].items()]
    q = result["queries"]
    head = (f"T2MR on {q['queries']} playlists (query = playlist name; relevant = its {q['mean_relevant']:.1f} "
            f"catalog tracks on average; {q['dropped_no_catalog_track']} dropped with no catalog track).\n\n")
    return head + markdown_table(["system", *cols], rows) + "\n"


def plot_precision(result: dict, path: Path) -> Path:
    from eval.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in result["systems"].items():
        if " unimodal " in name:
            continue
        ax.plot(KS, [s["metrics"][f"P@{i}"] for i in KS], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("Precision@k")
    ax.set_title("Text-to-music retrieval")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    result = run(parse_config(T2MRConfig, argv))
    print(report_markdown(result))


if __name__ == "__main__":
    main()
