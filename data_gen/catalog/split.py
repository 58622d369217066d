"""Playlist split against leakage: playlists.jsonl -> splits/playlists_{train,eval}.{txt,jsonl} + split.json.

    music3m-split-playlists --run_dir runs/spotify --eval_fraction 0.2 --seed 0

The eval ids go to `--exclude_tag_playlists` (ingest) and `--tc_exclude_playlists` (vectorize); evaluations read
playlists_eval.jsonl through `--playlists`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config
from common.manifest import ManifestMismatch, file_sha256, verify_outputs
from data_gen.catalog.ingest import MANIFEST, OUTPUTS
from data_gen.catalog.playlists import read_playlists, split_playlists, write_playlists
from data_gen.catalog.reader import CatalogError, RowError


@dataclass
class SplitConfig:
    """Split playlists into train/eval by playlist id with a fixed seed."""

    run_dir: str = field(metadata={"help": "run directory (reads RUN_DIR/playlists.jsonl unless --playlists)"})
    playlists: str | None = field(default=None, metadata={"help": "playlists JSONL (default RUN_DIR/playlists.jsonl)"})
    eval_fraction: float = field(default=0.2, metadata={"help": "share of playlists held out for evaluation"})
    seed: int = field(default=0, metadata={"help": "split seed"})
    fold: int = field(default=0, metadata={
        "help": "which block of the seeded order is held out: folds 0..1/eval_fraction-1 of one seed are disjoint"})
    out_dir: str | None = field(default=None, metadata={"help": "output folder (default RUN_DIR/splits)"})


def run(cfg: SplitConfig) -> dict:
    src = Path(cfg.playlists or Path(cfg.run_dir) / OUTPUTS["playlists"])
    if not cfg.playlists and (Path(cfg.run_dir) / MANIFEST).exists():  # the run's own playlists: the ones ingest wrote
        verify_outputs(Path(cfg.run_dir) / MANIFEST, {"playlists": OUTPUTS["playlists"]})
    playlists = read_playlists(src)
    train, evaluation = split_playlists(playlists, cfg.eval_fraction, cfg.seed, cfg.fold)
    out = Path(cfg.out_dir or Path(cfg.run_dir) / "splits")
    out.mkdir(parents=True, exist_ok=True)
    (out / "playlists_train.txt").write_text("".join(f"{p}\n" for p in train))
    (out / "playlists_eval.txt").write_text("".join(f"{p}\n" for p in evaluation))
    eval_set = set(evaluation)
    write_playlists([p for p in playlists if p.playlist_id in eval_set], out / "playlists_eval.jsonl")
    write_playlists([p for p in playlists if p.playlist_id not in eval_set], out / "playlists_train.jsonl")
    info = {"source": str(src), "source_sha256": file_sha256(src), "seed": cfg.seed, "fold": cfg.fold,
            "eval_fraction": cfg.eval_fraction, "train": len(train), "eval": len(evaluation)}
    (out / "split.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    try:
        info = run(parse_config(SplitConfig, argv))
    except (ManifestMismatch, CatalogError, RowError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{info['train']} train / {info['eval']} eval playlists (seed {info['seed']})")


if __name__ == "__main__":
    main()
