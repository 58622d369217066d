"""The CPU side of the Spotify T2MR experiments: evaluation run -> validation run + D_qt files + request sets.

    python -m bench.t2mr_data --csv ../shared/data/spotify_songs/spotify_songs.csv

Reads the evaluation run of bench.spotify_tokenizers (RUN/splits: 307 train / 77 eval playlists), then
1. carves the validation playlists out of the training playlists (by id, `val_seed`) and builds the validation run
   (ingest + vectorize) whose ST tags and TC come from the remaining training playlists only;
2. for both runs writes D_qt with basic and rich templates and from the training playlists' names
   (RUN/dqt/{basic,rich,playlists}/dqt.parquet), basic templates for every track (basic_all: no held-out tracks),
   one request naming the artist per track (artist: rich artist phrasings, every track), one naming its album
   (album), its decade or year (era), and one naming its artist, song or title words inside a longer playlist name
   (mention; in these, rows whose request equals a held-out playlist's name are dropped), and a sample of
   training playlists as the "seen" request set (RUN/splits/seen/playlists_eval.jsonl).
Steps whose outputs exist are skipped. The GPU side: bench/t2mr_experiments.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config
from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.catalog.playlists import read_playlists, write_playlists
from data_gen.catalog.split import SplitConfig
from data_gen.catalog.split import run as split_run
from data_gen.synth.dqt import DqtConfig
from data_gen.synth.dqt import run as dqt_run
from data_gen.vectorize.run import VectorizeConfig
from data_gen.vectorize.run import run as vectorize_run


@dataclass
class T2MRDataConfig:
    """Validation run, D_qt files and request sets for the Spotify T2MR experiments."""

    csv: str = field(metadata={"help": "spotify_songs.csv"})
    eval_run: str = field(default="runs/spotify_bench", metadata={
        "help": "evaluation run of bench.spotify_tokenizers (features without its 77 evaluation playlists)"})
    val_run: str = field(default="runs/spotify_val", metadata={"help": "the validation run to build"})
    val_fraction: float = field(default=0.2, metadata={"help": "share of the training playlists held out"})
    val_seed: int = field(default=1, metadata={"help": "seed of the validation split"})
    val_fold: int = field(default=0, metadata={
        "help": "validation fold: folds 0..4 of one seed (val_fraction 0.2) are disjoint sets of training playlists; "
                "build each into its own val_run"})
    seen_fraction: float = field(default=0.25, metadata={
        "help": "share of each run's training playlists used as the seen request set"})
    seen_seed: int = field(default=2, metadata={"help": "seed of the seen sample"})
    num_queries: int = field(default=3, metadata={"help": "template requests per track"})
    device: str = field(default="cpu", metadata={"help": "device of the text encoder"})


def _train_playlists(run: Path) -> Path:
    """RUN/splits/playlists_train.jsonl: the run's playlists minus its evaluation playlists."""
    out = run / "splits" / "playlists_train.jsonl"
    if not out.exists():
        held_out = set((run / "splits" / "playlists_eval.txt").read_text().split())
        write_playlists([p for p in read_playlists(run / "playlists.jsonl") if p.playlist_id not in held_out], out)
    return out


def build_val_run(cfg: T2MRDataConfig) -> None:
    eval_run, val_run = Path(cfg.eval_run), Path(cfg.val_run)
    splits = val_run / "splits"
    if not (splits / "excluded.txt").exists():
        split_run(SplitConfig(run_dir=str(val_run), playlists=str(_train_playlists(eval_run)),
                              eval_fraction=cfg.val_fraction, seed=cfg.val_seed, fold=cfg.val_fold,
                              out_dir=str(splits)))
        ids = (eval_run / "splits" / "playlists_eval.txt").read_text() + (splits / "playlists_eval.txt").read_text()
        (splits / "excluded.txt").write_text(ids)
    excluded = str(splits / "excluded.txt")
    if not (val_run / "catalog.parquet").exists():
        ingest_run(IngestConfig(run_dir=str(val_run), source="spotify", input=cfg.csv, exclude_tag_playlists=excluded))
    vectorize_run(VectorizeConfig(run_dir=str(val_run), device=cfg.device, tc_exclude_playlists=excluded))


def build_requests(cfg: T2MRDataConfig, run: Path) -> dict:
    train = _train_playlists(run)
    # the requests of this run's held-out playlists are never training requests (decontamination)
    held_out = {"exclude_requests": str(run / "splits" / "playlists_eval.jsonl")}
    counts = {}

    def per_track(intent: str, num_queries: int = 1) -> dict:  # rich-template requests of one intent, every track
        return {"mode": "template", "templates": "rich", "intents": intent, "num_queries": num_queries,
                "test_fraction": 0.0, **held_out}

    for name, extra in (("basic", {"mode": "template", "templates": "basic"}),
                        ("rich", {"mode": "template", "templates": "rich"}),
                        # a training playlist may share its name with a held-out one: those rows are dropped too
                        ("playlists", {"mode": "playlists", "playlists": str(train), **held_out}),
                        # every catalog track in the train split (a T2MR model should be able to emit any track)
                        ("basic_all", {"mode": "template", "templates": "basic", "test_fraction": 0.0, **held_out}),
                        # one request per track that names its artist ("This Is X", "X essentials", ...)
                        ("artist", per_track("artist")),
                        # one request per track that names its album ("80s 100 Hits", "MTV Unplugged album", ...)
                        ("album", per_track("album")),
                        # two such requests per track, the first as above (round 18: more ways to ask for an
                        # artist or album, the lookups that carry most of P@10)
                        ("artist2", per_track("artist", 2)),
                        ("album2", per_track("album", 2)),
                        # one request per track with a year that names its decade or year ("80s hits", ...)
                        ("era", per_track("era")),
                        # one request per track naming its artist, song or title words inside a longer playlist
                        # name ("ARTIST live tour setlist", "TITLE - ARTIST", ...)
                        ("mention", per_track("mention"))):
        out = run / "dqt" / name
        if not (out / "dqt.parquet").exists():
            dqt_run(DqtConfig(run_dir=str(run), out_dir=str(out), **{"num_queries": cfg.num_queries, **extra}))
        counts[name] = json.loads((out / "dqt_manifest.json").read_text())["counts"]["rows"]
    seen = run / "splits" / "seen"
    if not (seen / "playlists_eval.jsonl").exists():
        split_run(SplitConfig(run_dir=str(run), playlists=str(train), eval_fraction=cfg.seen_fraction,
                              seed=cfg.seen_seed, out_dir=str(seen)))
    counts["seen_playlists"] = sum(1 for _ in open(seen / "playlists_eval.jsonl"))
    return counts


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(T2MRDataConfig, argv)
    build_val_run(cfg)
    for run in (Path(cfg.val_run), Path(cfg.eval_run)):
        print(run, json.dumps(build_requests(cfg, run)))


if __name__ == "__main__":
    main()
