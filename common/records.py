"""Row files shared by the stages (D_qt, D_r, ...): a JSONL or parquet path -> list of dicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

_NOT_WORD = re.compile(r"[\W_]+")


def normalize_request(text: str) -> str:
    """Lower case, words only: 'Hard Rock!!' and 'hard  rock' are the same request (the T2MR seen/unseen split and
    the decontamination of D_qt against evaluation requests both compare requests this way)."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def read_records(path: str | Path) -> list[dict]:
    """JSONL (one object per line, blank lines skipped) or parquet -> rows as dicts, in file order."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
