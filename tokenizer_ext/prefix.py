"""A tokenizer's IDs cut to their first levels: `python -m tokenizer_ext.prefix --token_db_dir SRC --levels 1
--out_dir DST` writes DST's token database (each group's first L codes, conflicts disambiguated again) beside a copy
of SRC's split and manifest, so SFT, generation and retrieval take DST like any tokenizer folder.

A residual quantizer's first level is its coarse clustering; the later levels refine it. On Spotify, K-means IDs
(one 1,024-code level per modality) are exactly RQ-KMeans 1024/256/256 cut to one level, and they scored above the
three-level IDs on the evaluation split (docs/t2mr.md round 13): the length of the ID is a lever of its own.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config
from tokenizer_ext.token_db import TokenDB

COPIED = ("split.json", "test_tracks.txt", "manifest.json")


@dataclass
class PrefixConfig:
    """Cut a tokenizer folder's IDs to their first levels."""

    token_db_dir: str = field(metadata={"help": "tokenizer folder with token_db.parquet (music3m-train-tokenizer)"})
    levels: int = field(metadata={"help": "levels kept per code group (from the first)"})
    out_dir: str = field(metadata={"help": "new tokenizer folder"})


def write_prefix(src: str | Path, levels: int, out_dir: str | Path) -> dict:
    """SRC's token database cut to `levels` -> out_dir (with SRC's split and manifest); returns its conflict stats."""
    src, out_dir = Path(src), Path(out_dir)
    db = TokenDB.load(src)
    deepest = max(len(s) for s in db.codebook_sizes.values())
    if levels > deepest:
        raise ValueError(f"{src}: its IDs have at most {deepest} levels per group, asked for {levels}")
    cut = db.prefix(levels)
    cut.meta["prefix_of"] = str(src)
    cut.save(out_dir)
    for name in COPIED:
        if (src / name).exists():
            shutil.copy(src / name, out_dir / name)
    return cut.conflict_stats()


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(PrefixConfig, argv)
    try:
        stats = write_prefix(cfg.token_db_dir, cfg.levels, cfg.out_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"out_dir": cfg.out_dir, "levels": cfg.levels, **stats}))


if __name__ == "__main__":
    main()
