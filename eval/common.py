"""What every evaluation command shares: a tokenizer directory -> its token database, test split and run directory;
results -> markdown tables and JSON files (with config, versions and the leakage provenance of the features).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.manifest import config_dict, file_sha256, library_versions
from data_gen.catalog.playlists import read_id_list
from data_gen.catalog.track_split import split_tracks

TOKENIZER_CONFIG = "tokenizer.json"
SPLIT_FILE = "split.json"
TEST_TRACKS_FILE = "test_tracks.txt"
EVAL_DIR = "eval"


def default_out(tokenizer_dir: str | Path, name: str, suffix: str = ".json") -> Path:
    """<tokenizer_dir>/eval/<name>.json: results sit beside the tokenizer they measure."""
    return Path(tokenizer_dir) / EVAL_DIR / f"{name}{suffix}"


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def result_header(stage: str, config: Any) -> dict:
    return {"stage": stage, "config": config_dict(config), "versions": library_versions()}


def fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}e}" if x != 0 and abs(x) < 1e-3 else f"{x:.{digits}f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _lookup(d: dict, key: str) -> Any:
    """A key at the top level of a tokenizer/split JSON, or inside its `config`."""
    if key in d:
        return d[key]
    inner = d.get("config")
    return inner.get(key) if isinstance(inner, dict) else None


def resolve_run_dir(tokenizer_dir: str | Path, run_dir: str | None) -> Path | None:
    """--run_dir if given; else the run the tokenizer was trained on: `run_dir` in its manifest.json, the parent of
    the `embeddings` folder in token_db.json, or the default layout RUN_DIR/tokenizers/METHOD. None if none exists."""
    if run_dir:
        return Path(run_dir)
    tokenizer_dir = Path(tokenizer_dir)
    candidates = []
    for name, key in (("manifest.json", "run_dir"), ("tokenizer.json", "run_dir"), ("token_db.json", "embeddings")):
        path = tokenizer_dir / name
        if path.exists():
            value = _lookup(json.loads(path.read_text()), key)
            if value:
                candidates.append(Path(value).parent if key == "embeddings" else Path(value))
    candidates.append(tokenizer_dir.resolve().parent.parent)
    for c in candidates:
        if (c / "embeddings" / "tracks.parquet").exists():
            return c
    return None


def load_test_split(tokenizer_dir: str | Path, track_ids: Sequence[str]) -> tuple[np.ndarray, str]:
    """bool [N] (True = test track) and where it came from: test_tracks.txt if the tokenizer wrote one, else the
    hash split of data_gen.catalog.track_split with the seed and fraction in split.json (or tokenizer.json)."""
    tokenizer_dir = Path(tokenizer_dir)
    listed = tokenizer_dir / TEST_TRACKS_FILE
    if listed.exists():
        test = read_id_list(listed)
        return np.fromiter((t in test for t in track_ids), dtype=bool, count=len(track_ids)), str(listed)
    for name in (SPLIT_FILE, TOKENIZER_CONFIG):
        path = tokenizer_dir / name
        if not path.exists():
            continue
        info = json.loads(path.read_text())
        fraction = _lookup(info, "test_fraction")
        seed = _lookup(info, "seed")
        if fraction is not None and seed is not None:
            source = f"{path} (test_fraction={fraction}, seed={seed})"
            return split_tracks(track_ids, float(fraction), int(seed)), source
    raise FileNotFoundError(f"{tokenizer_dir}: no {TEST_TRACKS_FILE}, and no test_fraction/seed in {SPLIT_FILE} or "
                            f"{TOKENIZER_CONFIG}; cannot tell train from test tracks")


def feature_provenance(run_dir: Path | None, eval_playlist_ids: set[str]) -> dict:
    """Which playlists fed the playlist-derived features (ST tags at ingest, TC track2vec at vectorize), and how
    many of the evaluated playlists were kept out of them (data README leakage rule)."""
    if run_dir is None:
        return {"note": "no run directory: feature provenance unknown"}
    out: dict[str, Any] = {}
    sources = {"ST": (run_dir / "ingest_manifest.json", "exclude_tag_playlists"),
               "TC": (run_dir / "embeddings" / "manifest.json", "tc_exclude_playlists")}
    for m, (manifest, key) in sources.items():
        if not manifest.exists():
            out[m] = {"note": f"{manifest} not found"}
            continue
        config = json.loads(manifest.read_text()).get("config", {})
        if m == "ST" and config.get("source") != "spotify":  # only that source turns playlist labels into tags
            out[m] = {"note": f"tags of source {config.get('source')!r} are not built from playlists"}
            continue
        excluded_file = config.get(key)
        excluded = read_id_list(excluded_file) if excluded_file and Path(excluded_file).exists() else set()
        held_out = len(eval_playlist_ids & excluded)
        out[m] = {"excluded_playlists_file": excluded_file, "eval_playlists_held_out": held_out,
                  "eval_playlists": len(eval_playlist_ids),
                  "leaks": held_out < len(eval_playlist_ids)}
    return out


def provenance_line(prov: dict) -> str:
    if "note" in prov:
        return prov["note"]
    parts = []
    for m, p in prov.items():
        if "eval_playlists" not in p:
            parts.append(f"{m}: {p.get('note', 'unknown')}")
            continue
        state = "LEAKS (built from evaluated playlists)" if p["leaks"] else "clean"
        parts.append(f"{m} features held out {p['eval_playlists_held_out']}/{p['eval_playlists']} evaluated "
                     f"playlists ({p['excluded_playlists_file'] or 'no exclusion list'}): {state}")
    return "; ".join(parts)


def input_record(path: str | Path | None) -> dict | None:
    return {"path": str(path), "sha256": file_sha256(path)} if path and Path(path).exists() else None
