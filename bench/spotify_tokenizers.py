"""The Spotify Songs tokenizer benchmark in one command: the CSV -> leakage-free features -> tokens of every method
(K-means, VQ-VAE, RQ-VAE, RQ-KMeans, PSRQ, PSRQ modal-joint, FusID, MusicRec) -> reconstruction, ID quality,
content-based retrieval, vocabulary size / sequence length, plots -> `RUN_DIR/results.md` (+ JSON).

    python -m bench.spotify_tokenizers --csv ../shared/data/spotify_songs/spotify_songs.csv \\
        --run_dir runs/spotify_bench --methods kmeans,vqvae,rqvae,rqkmeans,psrq,psrq_joint,fusid,musicrec

A tokenizer directory that already holds a token database (RUN_DIR/tokenizers/METHOD) is evaluated as it is
(`--retrain` trains it again), so the 150-epoch GPU runs need not be repeated; the table says which rows were reused.

Leakage rule (data README): the playlists are split by id with a fixed seed; the evaluation playlists are the CBR
ground truth and feed no feature: their genre labels are kept out of ST (`--exclude_tag_playlists`) and their
co-occurrence out of TC (`--tc_exclude_playlists`). The split is written to RUN_DIR/splits/.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config
from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.catalog.playlists import split_playlists, write_playlists
from data_gen.catalog.sources.spotify import load_spotify
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run
from eval import cbr, id_quality, plots, reconstruction
from eval.common import fmt

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tokenizers"


@dataclass
class SpotifyTokenizerBenchmark:
    """Run the whole tokenizer comparison on Spotify Songs."""

    csv: str = field(metadata={"help": "spotify_songs.csv (TidyTuesday 2020-01-21)"})
    run_dir: str = field(default="runs/spotify_bench", metadata={"help": "run directory"})
    methods: str = field(default="kmeans,vqvae,rqvae,rqkmeans,psrq,psrq_joint,fusid,musicrec", metadata={
        "help": "tokenizers to compare (recipes/tokenizers/*.yaml)"})
    retrain: bool = field(default=False, metadata={
        "help": "train every method again; by default a tokenizer directory with a token database is reused"})
    features: str = field(default="build", metadata={
        "help": "build: split the playlists, ingest and vectorize (up-to-date modalities are reused); reuse: take "
                "RUN_DIR's splits/ and embeddings/ as they are", "choices": ["build", "reuse"]})
    epochs: int | None = field(default=None, metadata={
        "help": "override the recipes' epochs (paper: 150); only for quick runs, the README table uses 150"})
    eval_fraction: float = field(default=0.2, metadata={"help": "share of playlists held out as CBR ground truth"})
    split_seed: int = field(default=0, metadata={"help": "playlist split seed"})
    max_seeds: int = field(default=2000, metadata={"help": "CBR (playlist, seed track) pairs"})
    device: str = field(default="auto", metadata={"help": "device for encoders and RQ-VAE training"})


def _recon_cell(row: dict | None) -> str:
    if row is None or row["mse"] is None:
        return "n/a"
    return f"{row['mse']:.4f} / {row['cosine']:.3f}"


def token_cost(tok_dir: Path) -> dict:
    """What a tokenizer costs the LLM: music tokens (sum of codebook sizes), tokens added to the vocabulary (music,
    `<MOD-none>`, `<ID-k>`, boundaries), and tokens per track without boundaries (+1 where `<ID-k>` is needed)."""
    from tokenizer_ext.token_db import TokenDB

    db = TokenDB.load(tok_dir)
    before = db.__class__(db.track_ids, db.codebook_sizes, db.codes, db.tokenizer).conflict_stats()
    codes_per_track = sum(len(s) for s in db.codebook_sizes.values())
    return {"groups": list(db.modalities), "music_tokens": sum(sum(s) for s in db.codebook_sizes.values()),
            "vocabulary": len(db.vocabulary()), "codes_per_track": codes_per_track,
            "tokens_per_track": codes_per_track + (1 if before["conflict_rate"] > 0 else 0)}


def comparison_markdown(results: dict) -> str:
    """The headline tables: one summary row per tokenizer, then reconstruction, ID quality and CBR in detail."""
    out = ["## Comparison\n", summary_markdown(results), "", "Reconstruction on test tracks, MSE / cosine (3MToken "
           "Table 2); n/a where the tokenizer has no decoder:\n"]
    mods = []
    for r in results.values():
        mods += [x["modality"] for x in r["reconstruction"]["rows"] if x["modality"] not in mods]
    mods = [m for m in mods if m != "average"] + ["average"]
    out += ["| tokenizer | " + " | ".join(mods) + " |", "|---" * (len(mods) + 1) + "|"]
    for method, r in results.items():
        rows = {x["modality"]: x for x in r["reconstruction"]["rows"]}
        out.append(f"| {method} | " + " | ".join(_recon_cell(rows.get(m)) for m in mods) + " |")
    out += ["", "ID quality (FusID metrics): mean codebook under-utilisation over all (modality, level) codebooks, "
            "distinct full IDs and conflict rate before / after the `<ID-k>` disambiguation token:\n",
            "| tokenizer | mean CUR train | mean CUR test | distinct IDs (of tracks) | conflict rate | "
            "after disambiguation |",
            "|---|---|---|---|---|---|"]
    for method, r in results.items():
        q = r["id_quality"]
        levels = q["levels"]
        ids = {(x["subset"], x["disambiguation"]): x for x in q["ids"]}
        before, after = ids[("all", False)], ids[("all", True)]
        out.append(f"| {method} | {sum(x['cur_train'] for x in levels) / len(levels):.3f} | "
                   f"{sum(x['cur_test'] for x in levels) / len(levels):.3f} | {before['cardinality']:,} of "
                   f"{before['tracks']:,} | {before['conflict_rate']:.4f} | {after['conflict_rate']:.4f} |")
    ks = next(iter(results.values()))["cbr"]["k"]
    head = [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + [f"Hit@{k}" for k in ks]
    out += ["", "Content-based retrieval on the evaluation playlists (3MToken Table 1), multimodal tokens, equal "
            "weights, same seeds for every row:\n", "| tokenizer | " + " | ".join(head) + " |",
            "|---" * (len(head) + 1) + "|"]
    for method, r in results.items():
        for row in r["cbr"]["rows"]:
            if row["name"] in ("multimodal", "dense"):
                label = method if row["name"] == "multimodal" else "dense embeddings (reference)"
                mt = row["metrics"]
                cells = [mt[f"precision@{k}"] for k in ks] + [mt[f"recall@{k}"] for k in ks] + \
                        [mt[f"hit@{k}"] for k in ks]
                out.append(f"| {label} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return "\n".join(out) + "\n"


def summary_markdown(results: dict) -> str:
    """One row per tokenizer: average reconstruction, ID quality, CBR@10/50, and what the tokens cost the LLM."""
    head = ["tokenizer", "trained", "epochs", "recon MSE / cos (avg)", "CUR train", "CUR test", "distinct IDs",
            "conflict rate", "after <ID-k>", "P@10", "R@10", "Hit@10", "Hit@50", "music tokens", "vocab added",
            "tokens / track"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in results.items():
        rec = {x["modality"]: x for x in r["reconstruction"]["rows"]}.get("average")
        q = r["id_quality"]
        levels = q["levels"]
        ids = {(x["subset"], x["disambiguation"]): x for x in q["ids"]}
        before, after = ids[("all", False)], ids[("all", True)]
        multi = next(x for x in r["cbr"]["rows"] if x["name"] == "multimodal")["metrics"]
        cost = r["cost"]
        lines.append("| " + " | ".join([
            method, r["trained"], str(r["epochs"]), _recon_cell(rec),
            f"{sum(x['cur_train'] for x in levels) / len(levels):.3f}",
            f"{sum(x['cur_test'] for x in levels) / len(levels):.3f}",
            f"{before['cardinality']:,} of {before['tracks']:,}", f"{before['conflict_rate']:.4f}",
            f"{after['conflict_rate']:.4f}", fmt(multi["precision@10"]), fmt(multi["recall@10"]),
            fmt(multi["hit@10"]), fmt(multi["hit@50"]), f"{cost['music_tokens']:,}", f"{cost['vocabulary']:,}",
            str(cost["tokens_per_track"])]) + " |")
    return "\n".join(lines)


def fusid_conflict_note(result: dict) -> str:
    """Whether FusID's IDs are unique without `<ID-k>`, and if not, where the conflicts sit."""
    ids = {(x["subset"], x["disambiguation"]): x for x in result["id_quality"]["ids"]}
    before = ids[("all", False)]
    if before["conflict_rate"] == 0:
        return (f"FusID: conflict rate 0 without `<ID-k>`: all {before['tracks']:,} tracks have distinct "
                f"{len(result['cost']['groups'])}-group IDs.")
    train, test = ids[("train", False)], ids[("test", False)]
    return (f"FusID: conflict rate {before['conflict_rate']:.4f} without `<ID-k>` ({before['tracks_in_conflict']:,} "
            f"tracks in {before['conflict_groups']:,} groups, largest group {before['max_group']}; train "
            f"{train['conflict_rate']:.4f}, test {test['conflict_rate']:.4f}).")


def _section(title: str, body: str) -> str:
    return f"\n## {title}\n\n{body.strip()}\n"


def run(cfg: SpotifyTokenizerBenchmark) -> Path:
    run_dir = Path(cfg.run_dir)
    splits = run_dir / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    if cfg.features == "reuse":
        train_ids = (splits / "playlists_train.txt").read_text().split()
        eval_ids = (splits / "playlists_eval.txt").read_text().split()
    else:
        # 1. playlist split (by id, fixed seed), written down before any feature is built
        _, playlists, _ = load_spotify(cfg.csv)
        train_ids, eval_ids = split_playlists(playlists, cfg.eval_fraction, cfg.split_seed)
        (splits / "playlists_eval.txt").write_text("".join(f"{p}\n" for p in eval_ids))
        (splits / "playlists_train.txt").write_text("".join(f"{p}\n" for p in train_ids))
        eval_set = set(eval_ids)
        write_playlists([p for p in playlists if p.playlist_id in eval_set], splits / "playlists_eval.jsonl")
        (splits / "split.json").write_text(json.dumps({"seed": cfg.split_seed, "eval_fraction": cfg.eval_fraction,
                                                       "train": len(train_ids), "eval": len(eval_ids)}, indent=2))

        # 2. features without the evaluation playlists
        ingest_run(IngestConfig(run_dir=str(run_dir), source="spotify", input=cfg.csv,
                                exclude_tag_playlists=str(splits / "playlists_eval.txt")))
        vectorize_run(VectorizeConfig(run_dir=str(run_dir), device=cfg.device,
                                      tc_exclude_playlists=str(splits / "playlists_eval.txt")))

    # 3. tokenizers, each from its paper recipe
    from tokenizer_ext.train import TrainConfig, summary_table
    from tokenizer_ext.train import run as train_run

    report = [f"# Spotify Songs tokenizer benchmark\n\nCSV: `{cfg.csv}`; playlists split by id (seed "
              f"{cfg.split_seed}): {len(train_ids)} train / {len(eval_ids)} eval. ST tags and TC come from the "
              f"{len(train_ids)} train playlists only, and so do FusID's co-occurrence pairs; CBR seeds and relevance "
              f"come from the {len(eval_ids)} eval playlists. Tokenizer train/test split: 80/20 by track (hash of "
              f"track_id, seed 0)."]
    results: dict = {}
    for method in [m.strip() for m in cfg.methods.split(",") if m.strip()]:
        tok_dir = str(run_dir / "tokenizers" / method)
        argv = ["--config", str(RECIPES / f"{method}.yaml"), "--run_dir", str(run_dir), "--device", cfg.device,
                "--out_dir", tok_dir]
        if cfg.epochs is not None:
            argv += ["--epochs", str(cfg.epochs)]
        train_cfg = parse_config(TrainConfig, argv)
        reuse = not cfg.retrain and all((Path(tok_dir) / f).exists()
                                        for f in ("tokenizer.json", "token_db.parquet", "manifest.json"))
        if reuse:  # evaluated as trained before: its manifest holds what training reported
            manifest = json.loads((Path(tok_dir) / "manifest.json").read_text())
            summary = {**manifest["counts"], "conflicts": manifest.get("conflicts", {}), "out_dir": tok_dir}
            trained_cfg = json.loads((Path(tok_dir) / "tokenizer.json").read_text())["config"]
        else:
            summary = train_run(train_cfg)
            trained_cfg = {"epochs": train_cfg.epochs, "method": method}
        epochs = "-" if method in ("kmeans", "rqkmeans", "psrq", "psrq_joint") else trained_cfg.get("epochs")
        rec = reconstruction.run(reconstruction.ReconstructionConfig(tokenizer_dir=tok_dir, run_dir=str(run_dir)))
        idq = id_quality.run(id_quality.IDQualityConfig(tokenizer_dir=tok_dir))
        ret = cbr.run(cbr.CBRConfig(tokenizer_dir=tok_dir, playlists=str(splits / "playlists_eval.jsonl"),
                                    run_dir=str(run_dir), max_seeds=cfg.max_seeds, dense=method == "rqvae"))
        pl = plots.run(plots.PlotsConfig(tokenizer_dir=tok_dir, run_dir=str(run_dir)))
        results[method] = {"train": summary, "reconstruction": rec, "id_quality": idq, "cbr": ret, "plots": pl,
                           "cost": token_cost(Path(tok_dir)), "trained": "reused" if reuse else "this run",
                           "epochs": epochs}
        # written after every method, so that a failure later keeps what was measured so far
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
        report.append(_section(f"{method}: training", summary_table(summary)))
        report.append(_section(f"{method}: reconstruction (test split)", reconstruction.report_markdown(rec)))
        report.append(_section(f"{method}: ID quality", id_quality.report_markdown(idq)))
        report.append(_section(f"{method}: content-based retrieval (eval playlists)", cbr.report_markdown(ret)))
        report.append(_section(f"{method}: genre purity of level-1 codes", plots.report_markdown(pl)))
    report.insert(1, comparison_markdown(results))
    if "fusid" in results:
        report.insert(2, fusid_conflict_note(results["fusid"]) + "\n")
    report.append(f"\nTotal wall time: {time.time() - t0:.0f} s.\n")
    out = run_dir / "results.md"
    out.write_text("\n".join(report))
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return out


def main(argv: list[str] | None = None) -> None:
    out = run(parse_config(SpotifyTokenizerBenchmark, argv))
    print(out.read_text())
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
