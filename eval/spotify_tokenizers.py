"""The Spotify Songs tokenizer benchmark in one command: the CSV -> leakage-free features -> RQ-VAE / VQ-VAE / K-means
tokens -> reconstruction, ID quality, content-based retrieval, plots -> `RUN_DIR/results.md` (+ JSON).

    python -m eval.spotify_tokenizers --csv ../shared/data/spotify_songs/spotify_songs.csv --run_dir runs/spotify_bench

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

from data_gen.config import parse_config
from data_gen.ingest import IngestConfig, run as ingest_run
from data_gen.playlists import split_playlists, write_playlists
from data_gen.sources.spotify import load_spotify
from data_gen.vectorize import VectorizeConfig, run as vectorize_run
from eval import cbr, id_quality, plots, reconstruction

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tokenizers"


@dataclass
class SpotifyTokenizerBenchmark:
    """Run the whole tokenizer comparison on Spotify Songs."""

    csv: str = field(metadata={"help": "spotify_songs.csv (TidyTuesday 2020-01-21)"})
    run_dir: str = field(default="runs/spotify_bench", metadata={"help": "run directory"})
    methods: str = field(default="rqvae,kmeans,vqvae", metadata={"help": "tokenizers to compare (recipes/tokenizers/*.yaml)"})
    epochs: int | None = field(default=None, metadata={
        "help": "override the recipes' epochs (paper: 150); only for quick runs, the README table uses 150"})
    eval_fraction: float = field(default=0.2, metadata={"help": "share of playlists held out as CBR ground truth"})
    split_seed: int = field(default=0, metadata={"help": "playlist split seed"})
    max_seeds: int = field(default=2000, metadata={"help": "CBR (playlist, seed track) pairs"})
    device: str = field(default="auto", metadata={"help": "device for encoders and RQ-VAE training"})


def comparison_markdown(results: dict) -> str:
    """The headline tables: one row per tokenizer (reconstruction, ID quality, CBR), plus the dense reference."""
    out = ["## Comparison\n", "Reconstruction on test tracks, MSE / cosine (3MToken Table 2):\n"]
    first = next(iter(results.values()))
    mods = [r["modality"] for r in first["reconstruction"]["rows"]]
    out += ["| tokenizer | " + " | ".join(mods) + " |", "|---" * (len(mods) + 1) + "|"]
    for method, r in results.items():
        rows = {x["modality"]: x for x in r["reconstruction"]["rows"]}
        out.append(f"| {method} | " + " | ".join(f"{rows[m]['mse']:.4f} / {rows[m]['cosine']:.3f}" for m in mods) + " |")
    out += ["", "ID quality (FusID metrics): mean codebook under-utilisation over all (modality, level) codebooks, "
            "distinct full IDs and conflict rate before / after the `<ID-k>` disambiguation token:\n",
            "| tokenizer | mean CUR train | mean CUR test | distinct IDs (of tracks) | conflict rate | after disambiguation |",
            "|---|---|---|---|---|---|"]
    for method, r in results.items():
        q = r["id_quality"]
        levels = q["levels"]
        ids = {(x["subset"], x["disambiguation"]): x for x in q["ids"]}
        before, after = ids[("all", False)], ids[("all", True)]
        out.append(f"| {method} | {sum(x['cur_train'] for x in levels) / len(levels):.3f} | "
                   f"{sum(x['cur_test'] for x in levels) / len(levels):.3f} | {before['cardinality']:,} of "
                   f"{before['tracks']:,} | {before['conflict_rate']:.4f} | {after['conflict_rate']:.4f} |")
    ks = first["cbr"]["k"]
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


def _section(title: str, body: str) -> str:
    return f"\n## {title}\n\n{body.strip()}\n"


def run(cfg: SpotifyTokenizerBenchmark) -> Path:
    run_dir = Path(cfg.run_dir)
    splits = run_dir / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

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
    from tokenizer_ext.train import TrainConfig, run as train_run, summary_table

    report = [f"# Spotify Songs tokenizer benchmark\n\nCSV: `{cfg.csv}`; playlists split by id (seed "
              f"{cfg.split_seed}): {len(train_ids)} train / {len(eval_ids)} eval. ST tags and TC come from the "
              f"{len(train_ids)} train playlists only; CBR seeds and relevance come from the {len(eval_ids)} eval "
              f"playlists. Tokenizer train/test split: 80/20 by track (hash of track_id, seed 0)."]
    results: dict = {}
    for method in [m.strip() for m in cfg.methods.split(",") if m.strip()]:
        argv = ["--config", str(RECIPES / f"{method}.yaml"), "--run_dir", str(run_dir), "--device", cfg.device,
                "--out_dir", str(run_dir / "tokenizers" / method)]
        if cfg.epochs is not None:
            argv += ["--epochs", str(cfg.epochs)]
        summary = train_run(parse_config(TrainConfig, argv))
        tok_dir = str(run_dir / "tokenizers" / method)
        rec = reconstruction.run(reconstruction.ReconstructionConfig(tokenizer_dir=tok_dir, run_dir=str(run_dir)))
        idq = id_quality.run(id_quality.IDQualityConfig(tokenizer_dir=tok_dir))
        ret = cbr.run(cbr.CBRConfig(tokenizer_dir=tok_dir, playlists=str(splits / "playlists_eval.jsonl"),
                                    run_dir=str(run_dir), max_seeds=cfg.max_seeds, dense=method == "rqvae"))
        pl = plots.run(plots.PlotsConfig(tokenizer_dir=tok_dir, run_dir=str(run_dir)))
        results[method] = {"train": summary, "reconstruction": rec, "id_quality": idq, "cbr": ret, "plots": pl}
        report.append(_section(f"{method}: training", summary_table(summary)))
        report.append(_section(f"{method}: reconstruction (test split)", reconstruction.report_markdown(rec)))
        report.append(_section(f"{method}: ID quality", id_quality.report_markdown(idq)))
        report.append(_section(f"{method}: content-based retrieval (eval playlists)", cbr.report_markdown(ret)))
        report.append(_section(f"{method}: genre purity of level-1 codes", plots.report_markdown(pl)))
    report.insert(1, comparison_markdown(results))
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
