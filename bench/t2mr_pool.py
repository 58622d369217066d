"""Pool T2MR results of several request sets (validation folds) -> one table with bootstrap intervals.

    python -m bench.t2mr_pool --results runs/t2mr_report/fold0/t2mr.json runs/t2mr_report/fold1/t2mr.json

Each t2mr.json (written by `music3m-t2mr`) holds every system's P@10 per request; a system's pooled P@10 is the mean
over all requests of the files that have it (so each request counts once, whatever its fold). Intervals: percentile
bootstrap over the pooled requests; the difference to BM25 is paired over the requests where both were scored.
`--average "NAME=A + B + ..."` adds a system whose P@10 on each request is the mean of systems A, B, ... (seed
replicates of one setting), scored in every file that has all of them: the setting's seed-averaged P@10 with
intervals over requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import parse_config
from eval.common import fmt_interval, markdown_table
from eval.metrics import bootstrap_ci


@dataclass
class PoolConfig:
    """Pool the per-request P@10 of several music3m-t2mr runs."""

    results: list[str] = field(metadata={"help": "t2mr.json files (one per validation fold or request set)"})
    reference: str = field(default="BM25", metadata={"help": "system the paired differences are taken against"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    out: str | None = field(default=None, metadata={"help": "also write the table (markdown) here"})
    average: list[str] = field(default_factory=list, metadata={
        "help": "'NAME=SYSTEM_A + SYSTEM_B + ...': also score the per-request mean of these systems (e.g. one "
                "setting's seeds) as NAME; ' + ' separates them, as in music3m-t2mr --fuse (system names hold commas)"})


def parse_averages(specs: list[str]) -> dict[str, list[str]]:
    """['NAME=A + B'] -> {NAME: [A, B]}; a spec without '=' or with fewer than two systems is refused."""
    out = {}
    for spec in specs:
        name, _, members = spec.partition("=")
        systems = [m.strip() for m in members.split(" + ") if m.strip()]
        if not name.strip() or len(systems) < 2:
            raise ValueError(f"--average {spec!r}: expected NAME=SYSTEM_A + SYSTEM_B[ + ...]")
        out[name.strip()] = systems
    return out


def pool(paths: list[str], reference: str = "BM25", seed: int = 0,
         averages: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """system -> {requests, files, P@10, P@10 95% CI, P@10 - REFERENCE 95% CI}."""
    per: dict[str, list[np.ndarray]] = {}
    ref_of: dict[str, list[np.ndarray]] = {}
    files: dict[str, int] = {}
    for path in paths:
        systems = json.loads(Path(path).read_text())["systems"]
        for name, members in (averages or {}).items():
            if all(m in systems for m in members):
                rows = [np.asarray(systems[m].get("P@10 per request", []), dtype=float) for m in members]
                if len({r.shape for r in rows}) != 1:
                    raise ValueError(f"{path}: the systems averaged as {name!r} were scored on different requests")
                systems[name] = {"P@10 per request": np.mean(rows, axis=0).tolist()}
        ref = systems.get(reference, {}).get("P@10 per request")
        for name, s in systems.items():
            values = s.get("P@10 per request")
            if values is None:
                raise ValueError(f"{path}: system {name!r} has no 'P@10 per request' (re-score it with music3m-t2mr)")
            per.setdefault(name, []).append(np.asarray(values))
            files[name] = files.get(name, 0) + 1
            if ref is not None and name != reference:
                ref_of.setdefault(name, []).append(np.asarray(ref))
    out = {}
    for name, chunks in per.items():
        x = np.concatenate(chunks)
        row = {"requests": int(x.size), "files": files[name], "P@10": float(x.mean()),
               "P@10 95% CI": bootstrap_ci(x, seed=seed)}
        if len(ref_of.get(name, [])) == len(chunks):
            row[f"P@10 - {reference} 95% CI"] = bootstrap_ci(x, np.concatenate(ref_of[name]), seed=seed)
        out[name] = row
    return out


def table(pooled: dict[str, dict], reference: str = "BM25") -> str:
    key = f"P@10 - {reference} 95% CI"
    rows = [[n, str(r["requests"]), str(r["files"]), f"{r['P@10']:.4f}", fmt_interval(r["P@10 95% CI"]),
             fmt_interval(r.get(key))]
            for n, r in sorted(pooled.items(), key=lambda kv: -kv[1]["P@10"])]
    return markdown_table(["system", "requests", "files", "P@10", "95% interval", f"P@10 - {reference}, paired"], rows)


def show(text: str, out: str | None = None) -> None:
    """Print a table and, with `out`, also write it there."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(PoolConfig, argv)
    show(table(pool(cfg.results, cfg.reference, cfg.seed, parse_averages(cfg.average)), cfg.reference), cfg.out)


if __name__ == "__main__":
    main()
