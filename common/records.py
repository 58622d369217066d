"""Row files shared by the stages (D_qt, D_r, ...): a JSONL or parquet path -> list of dicts."""

from __future__ import annotations

import json
from pathlib import Path


def read_records(path: str | Path) -> list[dict]:
    """JSONL (one object per line, blank lines skipped) or parquet -> rows as dicts, in file order."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
