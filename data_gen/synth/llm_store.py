"""On-disk state of a generation run: the response cache (sqlite) and the per-item result logs (JSONL).

`ResponseCache` (request key -> response), `ResultLog` (items.jsonl + failures.jsonl, flushed per line; a half-written
last line is cut off on open), `check_run_state` (refuse to resume from other inputs or settings) and `write_dataset`
(the final JSONL + parquet).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ITEMS_FILE, FAILURES_FILE, STATE_FILE = "items.jsonl", "failures.jsonl", "run_state.json"


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    """sha256 of (model, messages, sampling params incl. seed) in a canonical JSON form."""
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A persistent key -> JSON value store (sqlite, WAL); each put is committed at once."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, json.dumps(value)))
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict]:
    """Read a JSONL log. A torn last line (no newline, or not JSON) is ignored, and cut off when `repair`."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        try:
            record = json.loads(line) if end >= 0 else None
        except json.JSONDecodeError:
            record = None
        if record is None:
            if end >= 0 and data.find(b"\n", end + 1) >= 0:  # a bad line that is not the last: real corruption
                raise ValueError(f"{path}: unreadable line at byte {pos}; the log is corrupt")
            if repair:
                with open(path, "r+b") as fh:
                    fh.truncate(pos)
            break
        records.append(record)
        pos = end + 1
    return records


class ResultLog:
    """Append-only items.jsonl / failures.jsonl of one run; `done` holds the keys already in either file.

    With `retry_failed`, failures that were not about the output (reason not "invalid_*": timeouts, HTTP errors)
    are dropped from failures.jsonl first, so that their items are attempted again.
    """

    def __init__(self, out_dir: str | Path, retry_failed: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.items_path, self.failures_path = self.out_dir / ITEMS_FILE, self.out_dir / FAILURES_FILE
        self.done = {r["key"] for r in read_jsonl(self.items_path, repair=True)}
        failures = read_jsonl(self.failures_path, repair=True)
        if retry_failed:
            failures = [f for f in failures if f["reason"].startswith("invalid_")]
            tmp = self.failures_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(f, ensure_ascii=False, sort_keys=True) + "\n" for f in failures))
            tmp.replace(self.failures_path)
        self.done |= {r["key"] for r in failures}
        self._items = open(self.items_path, "a", encoding="utf-8")
        self._failures = open(self.failures_path, "a", encoding="utf-8")

    def _append(self, fh, record: dict) -> None:
        if record["key"] in self.done:
            raise RuntimeError(f"item {record['key']!r} was already written")
        fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        fh.flush()
        self.done.add(record["key"])

    def add_item(self, record: dict) -> None:
        self._append(self._items, record)

    def add_failure(self, record: dict) -> None:
        self._append(self._failures, record)

    def close(self) -> None:
        self._items.close()
        self._failures.close()


def read_results(out_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """-> (items sorted by order, failures sorted by order) of a run folder."""
    out_dir = Path(out_dir)
    items = sorted(read_jsonl(out_dir / ITEMS_FILE), key=lambda r: r["order"])
    failures = sorted(read_jsonl(out_dir / FAILURES_FILE), key=lambda r: r["order"])
    return items, failures


def check_run_state(out_dir: str | Path, state: dict[str, Any], overwrite: bool = False) -> None:
    """Record `state` (inputs + settings that change results) in out_dir; refuse to mix runs of other states.

    With `overwrite`, earlier results are removed (the response cache is kept: it is keyed by request content).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / STATE_FILE
    logs = [out_dir / ITEMS_FILE, out_dir / FAILURES_FILE]
    if overwrite:
        for p in logs:
            p.unlink(missing_ok=True)
    elif path.exists() and any(p.exists() for p in logs):
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(state)):
            changed = sorted(k for k in set(old) | set(state) if old.get(k) != state.get(k))
            raise RuntimeError(f"{out_dir} holds results of a run with other {', '.join(changed)}; "
                               "use another output folder or --overwrite")
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def write_dataset(rows: list[dict], jsonl_path: str | Path, columns: tuple[str, ...]) -> None:
    """Rows -> `<name>.jsonl` (datasets.load_dataset("json", ...) reads it) and `<name>.parquet`, atomically."""
    jsonl_path = Path(jsonl_path)
    jsonl_path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{c: r.get(c) for c in columns} for r in rows]
    tmp = jsonl_path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.replace(jsonl_path)
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in columns})
    parquet = jsonl_path.with_suffix(".parquet")
    pq.write_table(table, parquet.with_suffix(".parquet.tmp"))
    parquet.with_suffix(".parquet.tmp").replace(parquet)
