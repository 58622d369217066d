"""Text-to-music retrieval (T2MR, 3MTokenRec Sec. 3.4): playlist names as requests, their tracks as relevant sets.

    music3m-t2mr --run_dir RUN --playlists RUN/splits/playlists_eval.jsonl --bundles 3MTokenRec=SFT_DIR --out_dir OUT

Systems: each bundle with and without modality selection, the first bundle's unimodal variants, and eval.baselines
(BM25, dense, ArtistTrackName). Precision@1..10, Recall@10, Hit@10, nDCG@10 -> OUT/t2mr.json, t2mr.md,
t2mr_precision.png.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from common.config import parse_config
from eval.common import fmt_interval, markdown_table, write_json
from eval.metrics import bootstrap_ci, ndcg_at_k, precision_per_query, ranking_metrics
from tokenizer_ext.tokens import is_joint_group

KS = tuple(range(1, 11))


@dataclass
class T2MRConfig:
    """Text-to-music retrieval evaluation over the playlists of the evaluation split."""

    run_dir: str = field(metadata={"help": "run directory with catalog.parquet"})
    playlists: str = field(metadata={"help": "evaluation playlists JSONL (playlist_id, name, tracks)"})
    out_dir: str = field(metadata={"help": "where t2mr.json / .md / .png go"})
    bundles: list[str] = field(default_factory=list, metadata={
        "help": "NAME=DIR pairs of trained bundles; the first also gets the unimodal variants"})
    generations: list[str] = field(default_factory=list, metadata={
        "help": "NAME=FILE pairs of generations saved by an earlier run (--save_generations): scored like bundles, "
                "without the model"})
    save_generations: bool = field(default=False, metadata={
        "help": "write each bundle's beams to OUT_DIR/generations_NAME.json (score them later with --generations)"})
    relevance: str | None = field(default=None, metadata={
        "help": "modality-relevance model dir, or a relevance_scores.json written by an earlier run"})
    modality_prior: str | None = field(default=None, metadata={
        "help": "weights (LABEL:BM=1,... or a --tune_weights JSON) that multiply the relevance model's scores in "
                "modality selection: w_m = prior_m x relevance_m"})
    weights: list[str] = field(default_factory=list, metadata={
        "help": "extra fixed modality weights per system, LABEL:BM=1,ST=0,... (or a weights JSON from --tune_weights)"})
    tune_weights: bool = field(default=False, metadata={
        "help": "search per-modality weights (coordinate ascent over --weight_grid) that maximise P@10 on these "
                "playlists, per system; write OUT_DIR/weights_NAME.json. Run it on a validation split only"})
    weight_grid: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0], metadata={
        "help": "values tried for each modality weight by --tune_weights"})
    rankings: list[str] = field(default_factory=lambda: ["match"], metadata={
        "help": "match (3MTokenRec: merged hierarchical matching), beams (the beams' own tracks first) and/or "
                "neighbours (content nearest to what the beams' codes stand for; reads RUN_DIR/embeddings)"})
    beams_used: list[int] = field(default_factory=list, metadata={
        "help": "also score with only the first B beams of each request (B not below the beams generated is skipped)"})
    beam_temperature: float = field(default=1.0, metadata={
        "help": "beams are merged with weights softmax(logprob / T): 1 is the generation's own distribution, larger "
                "T flattens it towards a vote of the beams (inf: every beam counts the same)"})
    merge: list[str] = field(default_factory=list, metadata={
        "help": "t2mr.json files of earlier runs on the same queries (e.g. the bundles' run on a GPU machine): "
                "their systems join this table"})
    baselines: list[str] = field(default_factory=lambda: ["bm25", "dense", "artist_track_name"], metadata={
        "help": "text baselines: bm25, dense, artist_track_name, or none"})
    fuse: list[str] = field(default_factory=list, metadata={
        "help": "hybrid systems to add: labels of this table's systems joined by ' + ' (e.g. 'NAME w/o modality "
                "selection + BM25 + Dense (MiniLM)'), fused by reciprocal ranks over --fuse_depth deep lists"})
    fuse_depth: int = field(default=64, metadata={
        "help": "with --fuse: every system is ranked this deep (its saved ranked_track_ids too); metrics stay at k"})
    rrf_k: float = field(default=60.0, metadata={"help": "with --fuse: a rank r (from 1) adds 1 / (rrf_k + r)"})
    artist_first: bool = field(default=False, metadata={
        "help": "add, for every system, 'LABEL, artist first': its top track's artist in front (the artist's tracks "
                "it ranked, --fuse_depth deep, then the artist's other catalog tracks by track ID), then its ranking"})
    unimodal: bool = field(default=True, metadata={"help": "add the first bundle's unimodal variants"})
    diagnostics: bool = field(default=True, metadata={
        "help": "seen/unseen requests, retrieval ceilings, distinct top beams, level-1 agreement per modality"})
    base_model: str = field(default="smollm2", metadata={"help": "base LLM of ArtistTrackName"})
    mode: str = field(default="catalog", metadata={"help": "decoding mask of the bundles"})
    num_beams: int = field(default=4, metadata={"help": "beams per request"})
    k: int = field(default=10, metadata={"help": "ranking depth"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    batch_size: int = field(default=16, metadata={"help": "requests per generate call"})
    seed: int = field(default=0, metadata={"help": "seed of the random-member ceiling"})
    brief: bool = field(default=False, metadata={"help": "print one line (P@10 of every system) instead of the table"})


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
    m = ranking_metrics(ranked, relevant, sorted(set(KS) | {k}))  # the depth may be beyond P@1..10
    out = {f"P@{i}": m[f"precision@{i}"] for i in KS}
    out.update({f"R@{k}": m[f"recall@{k}"], f"Hit@{k}": m[f"hit@{k}"], f"nDCG@{k}": ndcg_at_k(ranked, relevant, k)})
    return out


def _to_catalog_rows(rows_list, track_ids: list[str], row_of: dict[str, int], k: int) -> np.ndarray:
    out = np.full((len(rows_list), k), -1, dtype=np.int64)
    for i, rows in enumerate(rows_list):
        mapped = [row_of[track_ids[int(r)]] for r in rows if int(r) >= 0][:k]
        out[i, :len(mapped)] = mapped
    return out


@dataclass
class GeneratedSystem:
    """One bundle's beams for every request (generated now or read from --generations)."""

    name: str
    db: object                       # TokenDB the beams are parsed against
    generations: list                # inference.recommend.Generation per request
    seen: np.ndarray | None          # bool [Q]: request text in the bundle's SFT data (None: unknown)
    info: dict


def _generated_systems(cfg: T2MRConfig, queries: list[str], out: Path) -> list[GeneratedSystem]:
    from inference.recommend import Generation, Recommender
    from recipes.sft.bundle import normalize_request, read_train_requests
    from tokenizer_ext.token_db import TokenDB

    systems = []
    for spec in cfg.bundles:
        name, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--bundles: expected NAME=DIR, got {spec!r}")
        t0 = time.perf_counter()
        from inference.bundle import load_bundle

        bundle = load_bundle(path)
        rec = Recommender(bundle, None, mode=cfg.mode, num_beams=cfg.num_beams, device=cfg.device)
        gens = rec.generate(queries, batch_size=cfg.batch_size)
        gen_s = time.perf_counter() - t0
        trained = read_train_requests(path)
        seen = None if trained is None else np.array([normalize_request(q) in trained for q in queries])
        info = {"kind": name, "bundle": str(path), "generate_seconds": round(gen_s, 1),
                "token_db_dir": bundle.config.get("token_db_dir"), "num_beams": cfg.num_beams}
        print(f"{name}: generated {len(queries)} x {cfg.num_beams} beams in {gen_s:.0f} s", file=sys.stderr)
        if cfg.save_generations:
            write_json(out / f"generations_{name}.json", {
                **info, "name": name, "queries": queries, "seen": None if seen is None else seen.tolist(),
                "generations": [{"beams": g.beams, "logprobs": g.logprobs} for g in gens]})
        systems.append(GeneratedSystem(name, rec.db, gens, seen, info))
    for spec in cfg.generations:
        name, _, path = spec.partition("=")
        saved = json.loads(Path(path).read_text())
        if saved["queries"] != queries:
            raise ValueError(f"{path}: its queries differ from {cfg.playlists}'s")
        db_dir = saved.get("token_db_dir")
        if not db_dir or not Path(db_dir).exists():
            raise FileNotFoundError(f"{path}: token database {db_dir!r} of these generations not found")
        gens = [Generation(g["beams"], g["logprobs"]) for g in saved["generations"]]
        seen = None if saved.get("seen") is None else np.asarray(saved["seen"], dtype=bool)
        info = {k: saved[k] for k in ("bundle", "token_db_dir", "num_beams", "generate_seconds") if k in saved}
        systems.append(GeneratedSystem(name, TokenDB.load(db_dir), gens, seen, {"kind": name, **info, "from": path}))
    return systems


def parse_weights(spec: str, modalities) -> tuple[str, dict[str, float]]:
    """'LABEL:BM=1,ST=0.5' (or a weights JSON file written by --tune_weights) -> (label, {group: weight}); modalities
    left out get 0, joint groups left out (FusID's FU, PSRQ's SH) 1 as in inference.matching: weights given per
    modality say nothing about a code shared by several modalities."""
    if Path(spec).is_file():
        saved = json.loads(Path(spec).read_text())
        label, pairs = saved["label"], saved["weights"]
    else:
        label, _, body = spec.partition(":")
        pairs = dict(p.split("=") for p in body.split(",") if p)
    return label, {m: float(pairs.get(m, 1.0 if is_joint_group(m) else 0.0)) for m in modalities}


def run(cfg: T2MRConfig) -> dict:
    from inference.neighbours import ContentSpace, content_modalities
    from inference.retrieval import Retriever, modality_weights

    catalog = pq.read_table(Path(cfg.run_dir) / "catalog.parquet")
    track_ids = catalog.column("track_id").to_pylist()
    row_of = {t: i for i, t in enumerate(track_ids)}
    queries, relevant, counts = load_queries(cfg.playlists, track_ids)
    print(f"T2MR: {counts}", file=sys.stderr)
    systems: dict[str, dict] = {}
    rankings: dict[str, np.ndarray] = {}
    seen_of: dict[str, np.ndarray] = {}
    diagnostics: dict[str, dict] = {}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relevance = _relevance(cfg, queries, out)

    # fused lists, and the artist-first ones, need the systems' deeper ranks
    depth = max(cfg.k, cfg.fuse_depth) if cfg.fuse or cfg.artist_first else cfg.k
    spaces: dict[tuple, ContentSpace] = {}  # systems whose token DBs share track order and modalities share one
    for j, gs in enumerate(_generated_systems(cfg, queries, out)):
        content = None
        if "neighbours" in cfg.rankings:
            key = (tuple(gs.db.track_ids), content_modalities(gs.db))
            if key not in spaces:
                spaces[key] = ContentSpace.from_run(cfg.run_dir, gs.db.track_ids, key[1])
            content = spaces[key]
        retriever = Retriever(gs.db, content=content)
        mods = gs.db.modalities
        # the groups the weights name: the code groups, and under the neighbours ranking also the content
        # modalities a joint group stands for (FusID's FU -> BM, ST, ...); weights resolved over FU alone gave the
        # content modalities 0, every track the score 0, and every request the catalog's first ten rows
        wmods = tuple(dict.fromkeys((*mods, *content.vectors))) if content is not None else mods
        db_row_of = gs.db.row_of()
        db_rows = [[r for r in (db_row_of.get(track_ids[c]) for c in rel) if r is not None] for rel in relevant]
        full = gs.info.get("num_beams") or cfg.num_beams  # every beam the generations hold
        beams_used = sorted({full, *(b for b in cfg.beams_used if b < full)})

        def ranked(weights, ranking=cfg.rankings[0], b=full, gs=gs, retriever=retriever):
            res = [retriever.retrieve(g.beams[:b], g.logprobs[:b], w, k=depth, ranking=ranking,
                                      beam_temperature=cfg.beam_temperature)
                   for g, w in zip(gs.generations, weights)]
            return _to_catalog_rows([r.rows for r in res], gs.db.track_ids, row_of, depth)

        variants: dict[str, list] = {}
        if relevance is not None:
            selected = [modality_weights(s, wmods) for s in relevance.predict(queries)]
            if cfg.modality_prior:
                _, prior = parse_weights(cfg.modality_prior, wmods)
                selected = [{m: prior[m] * w[m] for m in wmods} for w in selected]
            variants[gs.name] = selected
        variants[f"{gs.name} w/o modality selection"] = [None] * len(queries)
        for spec in cfg.weights:
            label, w = parse_weights(spec, wmods)
            variants[f"{gs.name} weights {label}"] = [w] * len(queries)
        if cfg.tune_weights:
            best = tune_weights(lambda w: score(ranked([w] * len(queries)), relevant, cfg.k)["P@10"], wmods,
                                cfg.weight_grid)
            write_json(out / f"weights_{gs.name}.json", {"label": f"tuned on {Path(cfg.playlists).name}", **best})
            variants[f"{gs.name} tuned weights"] = [best["weights"]] * len(queries)
        if j == 0 and cfg.unimodal:
            for m in mods:
                variants[f"{gs.name} unimodal {m}"] = [{g: float(g == m) for g in mods}] * len(queries)
        well_formed = float(np.mean([_well_formed(g, gs.db) for g in gs.generations]))
        for label, weights in variants.items():
            for ranking in cfg.rankings:
                for b in beams_used:
                    default = ranking == cfg.rankings[0] and b == full
                    if not default and " unimodal " in label:
                        continue
                    name = label if default else f"{label} [{ranking}, {b} beams]"
                    rankings[name] = ranked(weights, ranking, b)
                    systems[name] = {**gs.info, "ranking": ranking, "beams": b, "well_formed_top_beam": well_formed}
                    if gs.seen is not None:
                        seen_of[name] = gs.seen
        if cfg.diagnostics:
            diagnostics[gs.name] = system_diagnostics(gs, retriever, db_rows, cfg.k, cfg.seed)

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
            rankings[label] = _pad(system.rank(queries, depth), depth)
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
            if s.get("seen") is not None:
                seen_of[label] = np.asarray(s["seen"], dtype=bool)
        diagnostics.update(other.get("diagnostics", {}))

    for spec in cfg.fuse:
        parts = spec.split(" + ")
        label, fused = fuse_rankings(parts, rankings, depth, cfg.rrf_k)
        rankings[label] = fused
        systems[label] = {"kind": "fusion", "systems": parts, "depth": depth, "rrf_k": cfg.rrf_k}
        seen = next((seen_of[p] for p in parts if p in seen_of), None)
        if seen is not None:
            seen_of[label] = seen

    if cfg.artist_first:
        for label, ranked_rows in list(rankings.items()):
            name = f"{label}, artist first"
            rankings[name] = artist_first(ranked_rows, catalog, depth)
            systems[name] = {**systems[label], "artist_first": True}
            if label in seen_of:
                seen_of[name] = seen_of[label]

    reference_seen = next(iter(seen_of.values()), None)
    per_query: dict[str, np.ndarray] = {}
    for label, ranked_rows in rankings.items():
        ranked_rows = _pad(ranked_rows, depth)  # scored at k; saved depth deep (with --fuse, deeper than k)
        systems[label]["metrics"] = score(ranked_rows, relevant, cfg.k)
        per_query[label] = precision_per_query(ranked_rows, relevant, 10)
        seen = seen_of.get(label, reference_seen)
        if seen is not None:
            systems[label]["seen"] = seen.tolist()
            for part, mask in (("seen", seen), ("unseen", ~seen)):
                systems[label][f"P@10 {part}"] = float(per_query[label][mask].mean()) if mask.any() else None
                systems[label][f"{part} requests"] = int(mask.sum())
        systems[label]["ranked_track_ids"] = [[track_ids[r] for r in row if r >= 0] for row in ranked_rows]
        systems[label]["P@10 per request"] = per_query[label].round(4).tolist()  # for pooling runs (bench.t2mr_pool)
        systems[label]["P@10 95% CI"] = bootstrap_ci(per_query[label], seed=cfg.seed)
    reference = next((b for b in ("BM25", "Dense (MiniLM)") if b in per_query), None)
    if reference:  # paired over the same requests: is the gap to the text baseline beyond noise?
        for label in [n for n in per_query if n != reference]:
            systems[label][f"P@10 - {reference} 95% CI"] = bootstrap_ci(per_query[label], per_query[reference],
                                                                        seed=cfg.seed)
            systems[label][f"requests vs {reference}"] = request_overlap(per_query[label], per_query[reference])
    result = {"config": cfg.__dict__, "queries": counts, "query_texts": queries, "systems": systems,
              "diagnostics": diagnostics}
    _record_in_model_cards(cfg, result)
    write_json(out / "t2mr.json", result)
    (out / "t2mr.md").write_text(report_markdown(result))
    plot_precision(result, out / "t2mr_precision.png")
    return result


def fuse_rankings(parts: list[str], rankings: dict[str, np.ndarray], depth: int,
                  rrf_k: float = 60.0) -> tuple[str, np.ndarray]:
    """Labels of `rankings` (catalog rows per request, -1 = none; a --fuse spec split at ' + ') -> (label, rows
    [requests, depth]) of their reciprocal-rank fusion, request by request."""
    from inference.retrieval import reciprocal_rank_fusion

    missing = [p for p in parts if p not in rankings]
    if len(parts) < 2 or missing:
        raise ValueError(f"--fuse {' + '.join(parts)!r}: expected two or more of this table's systems joined by ' + '; "
                         + (f"unknown: {missing}; " if missing else "") + f"systems: {sorted(rankings)}")
    out = np.full((len(rankings[parts[0]]), depth), -1, dtype=np.int64)
    for i in range(len(out)):
        fused = reciprocal_rank_fusion([[r for r in rankings[p][i] if r >= 0] for p in parts], rrf_k)[:depth]
        out[i, :len(fused)] = fused
    return f"RRF({', '.join(parts)})", out


def artist_first(ranked: np.ndarray, catalog, depth: int) -> np.ndarray:
    """Catalog rows per request [Q, D] -> the same rankings with each one's top track's artist in front
    (`lead_group_first`; the artist's unranked tracks by track ID, an order that knows nothing of playlists)."""
    from inference.retrieval import artist_groups, lead_group_first

    if "artist" not in catalog.column_names:
        raise ValueError("--artist_first leads each ranking with its top track's artist: the catalog has no 'artist' "
                         f"column (columns: {catalog.column_names})")
    group_of, by_track_id = artist_groups(catalog.column("track_id").to_pylist(), catalog.column("artist").to_pylist())
    out = np.full((len(ranked), depth), -1, dtype=np.int64)
    for i, row in enumerate(ranked):
        led = lead_group_first(row, group_of, depth, by_track_id)
        out[i, :len(led)] = led
    return out


def request_overlap(system: np.ndarray, reference: np.ndarray) -> dict:
    """Per-request P@10 of a system and of a reference (BM25) on the same requests -> on how many requests each
    gets a relevant track into the top 10, how many of those are the same, and the summed P@10 each earns where the
    other gets nothing: whether the two win on the same requests or on different ones."""
    system, reference = np.asarray(system), np.asarray(reference)
    a, b = system > 0, reference > 0
    return {"hit": int(a.sum()), "reference hit": int(b.sum()), "both": int((a & b).sum()),
            "P@10 sum where only this hits": round(float(system[a & ~b].sum()), 4),
            "P@10 sum where only the reference hits": round(float(reference[b & ~a].sum()), 4)}


def _record_in_model_cards(cfg: T2MRConfig, result: dict) -> None:
    """Each evaluated bundle's model card gets this run's P@10 (its rows and the baselines of the same run)."""
    from recipes.sft.bundle import record_evaluation

    q = result["queries"]
    baselines = [(n, s) for n, s in result["systems"].items() if s.get("kind") == "baseline"]
    for spec in cfg.bundles:
        name, _, path = spec.partition("=")
        rows = [(n, s) for n, s in result["systems"].items() if s.get("kind") == name and " unimodal " not in n]
        lines = [f"{n}: P@10 {s['metrics']['P@10']:.4f}, Hit@10 {s['metrics']['Hit@10']:.4f}" for n, s in
                 rows + baselines]
        record_evaluation(path, f"T2MR on {q['queries']} playlists of {Path(cfg.playlists).name} "
                                f"(query = playlist name; {cfg.num_beams} beams, mode {cfg.mode})", lines)


def _well_formed(generation, db) -> bool:
    from inference.retrieval import parse_sequence

    return bool(generation.beams) and parse_sequence(generation.beams[0], db) is not None


def tune_weights(objective, modalities, grid) -> dict:
    """Coordinate ascent from equal weights: each modality in turn takes the grid value with the best objective
    (ties keep the current value), two passes -> {"weights", "objective", "evaluations"}."""
    weights = {m: 1.0 for m in modalities}
    best, evaluations = objective(weights), 1
    for _ in range(2):
        for m in modalities:
            for v in grid:
                if v == weights[m]:
                    continue
                trial = {**weights, m: float(v)}
                if not any(trial.values()):
                    continue
                value = objective(trial)
                evaluations += 1
                if value > best:
                    best, weights = value, trial
    return {"weights": weights, "objective": best, "evaluations": evaluations}


def member_ceilings(index, members: list[list[int]], k: int, seed: int) -> dict:
    """The retrieval ceilings of a token database (no model): each playlist's ranking when the request's answer is
    one member's ID (hierarchical matching, equal weights) -> mean P@k over playlists for a random member, the mean
    over members, and the best member."""
    rng = np.random.default_rng(seed)
    random_p, expected_p, best_p = [], [], []
    for rows in members:
        if not rows:
            continue
        ranked = index.rank_rows(rows, None, k=k, exclude_self=False)
        member_set = set(rows)
        p = np.array([sum(int(r) in member_set for r in line) / k for line in ranked])
        expected_p.append(p.mean())
        best_p.append(p.max())
        random_p.append(p[rng.integers(len(p))])
    return {"ceiling_random_member_P@10": float(np.mean(random_p)) if random_p else None,
            "ceiling_expected_member_P@10": float(np.mean(expected_p)) if expected_p else None,
            "ceiling_best_member_P@10": float(np.mean(best_p)) if best_p else None}


def system_diagnostics(gs: GeneratedSystem, retriever, members: list[list[int]], k: int, seed: int) -> dict:
    """Where quality is lost: the retrieval ceilings (a random member's ID, the best member's ID, equal weights),
    distinct top-beam tracks, and per group the share of requests whose top beam has the playlist's most common
    level-1 code."""
    from inference.retrieval import parse_sequence

    db = gs.db
    ceilings = member_ceilings(retriever.index, members, k, seed)
    top = [parse_sequence(g.beams[0], db) if g.beams else None for g in gs.generations]
    top_rows = [retriever.exact_row(*t) if t is not None else None for t in top]
    agreement = {}
    for m in db.modalities:
        hits = n = 0
        for t, rows in zip(top, members):
            codes = [int(c) for c in db.codes[m][rows, 0] if c >= 0] if rows else []
            if t is None or not codes or t[0][m][0] < 0:
                continue
            n += 1
            hits += int(t[0][m][0] == np.bincount(codes).argmax())
        agreement[m] = {"share": hits / n if n else None, "requests": n}
    return {**ceilings, "distinct_top_beam_tracks": len({r for r in top_rows if r is not None}), "requests": len(top),
            "level1_agreement": agreement}


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
    from recipes.relevance import RelevanceModel

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
    split = any("P@10 unseen" in s for s in result["systems"].values())
    diff = next((key for s in result["systems"].values() for key in s if key.startswith("P@10 - ")), None)
    rows = []
    for name, s in result["systems"].items():
        row = [name, *(f"{s['metrics'][c]:.4f}" for c in cols), fmt_interval(s.get("P@10 95% CI"))]
        if diff:
            row.append(fmt_interval(s.get(diff)))
        if split:
            row += [_cell(s.get("P@10 seen")), _cell(s.get("P@10 unseen"))]
        rows.append(row)
    q = result["queries"]
    head = (f"T2MR on {q['queries']} playlists (query = playlist name; relevant = its {q['mean_relevant']:.1f} "
            f"catalog tracks on average; {q['dropped_no_catalog_track']} dropped with no catalog track).\n\n")
    extra = []
    if split:
        s = next(s for s in result["systems"].values() if "unseen requests" in s)
        extra = ["P@10 seen", "P@10 unseen"]
        head += (f"Seen requests (their normalised text is in the bundle's SFT data): {s['seen requests']}; unseen: "
                 f"{s['unseen requests']}. Baselines are split the same way.\n\n")
    cis = ["P@10 95% CI", *([diff.replace(" 95% CI", ", 95% CI")] if diff else [])]
    head += ("Intervals: percentile bootstrap over the requests (2,000 resamples); the difference to the text "
             "baseline is paired (the same requests).\n\n")
    out = head + markdown_table(["system", *cols, *cis, *extra], rows) + "\n"
    overlap = next((key for s in result["systems"].values() for key in s if key.startswith("requests vs ")), None)
    if overlap:
        ref = overlap.removeprefix("requests vs ")
        overlaps = {n: s[overlap] for n, s in result["systems"].items() if overlap in s}
        table = [[n, str(o["hit"]), str(o["both"]), f"{o['P@10 sum where only this hits']:.2f}",
                  f"{o['P@10 sum where only the reference hits']:.2f}"] for n, o in overlaps.items()]
        hits = next(iter(overlaps.values()))["reference hit"]
        out += (f"\nPer request against {ref} ({ref} gets a relevant track into the top 10 for {hits} requests):\n\n"
                + markdown_table(["system", "requests hit", f"of them also hit by {ref}",
                                  "summed P@10 where only it hits", f"summed P@10 where only {ref} hits"], table)
                + "\n")
    for name, d in result.get("diagnostics", {}).items():
        agree = ", ".join(f"{m} {_cell(a['share'])}" for m, a in d["level1_agreement"].items())
        out += (f"\n{name}: retrieval ceilings (the model emits a member's ID; equal weights, match): random member "
                f"P@10 {_cell(d['ceiling_random_member_P@10'])}, expected over members "
                f"{_cell(d['ceiling_expected_member_P@10'])}, best member {_cell(d['ceiling_best_member_P@10'])}; "
                f"distinct top-beam tracks {d['distinct_top_beam_tracks']} of {d['requests']} requests; top beam "
                f"has the playlist's most common level-1 code: {agree}.\n")
    return out


def _cell(x) -> str:
    return "-" if x is None else f"{x:.4f}"


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
    cfg = parse_config(T2MRConfig, argv)
    result = run(cfg)
    if cfg.brief:
        q = result["queries"]["queries"]
        print(f"T2MR on {q} playlists of {cfg.playlists}: " + ", ".join(
            f"{name} P@10 {s['metrics']['P@10']:.3f}" for name, s in result["systems"].items()))
    else:
        print(report_markdown(result))


if __name__ == "__main__":
    main()
