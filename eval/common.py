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
from data_gen.catalog.playlists import read_id_list, read_playlists
from data_gen.catalog.reader import CatalogError, RowError
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


def fmt_interval(ci: Sequence[float] | None) -> str:
    """[lo, hi] with 4 decimals; signed when the interval reaches below zero (a difference), '-' when absent."""
    if ci is None:
        return "-"
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci[0] < 0 else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


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


def _id_file(record: Any, what: str) -> tuple[set[str] | None, str | None, str | None]:
    """A recorded {path, sha256} (or a bare path from an older manifest) -> (ids, path, problem). The ids are None
    when the file is gone or changed since it was recorded (then `problem` says so)."""
    if not record:
        return None, None, None
    path, sha = (record.get("path"), record.get("sha256")) if isinstance(record, dict) else (str(record), None)
    if not path or not Path(path).exists():
        return None, path, f"{what} {path} no longer exists"
    if sha and file_sha256(path) != sha:
        return None, path, f"{what} {path} changed since the features were built"
    if what == "exclusion list":
        return read_id_list(path), path, None
    try:
        return {p.playlist_id for p in read_playlists(path)}, path, None
    except (CatalogError, RowError, OSError) as err:
        return None, path, f"{what} {path} unreadable ({err})"


def _held_out(eval_ids: set[str], excluded: Any, source: Any) -> dict:
    """Evaluated playlists vs one feature's exclusion list and source playlists: an evaluated playlist leaks when
    the source holds it and the exclusion list does not; one the source does not hold fed no feature."""
    excluded_ids, excluded_path, problem = _id_file(excluded, "exclusion list")
    out = {"excluded_playlists_file": excluded_path, "eval_playlists": len(eval_ids)}
    if problem:
        return {**out, "leaks": None, "note": f"{problem}: cannot verify"}
    source_ids, source_path, source_problem = _id_file(source, "playlists")
    used = eval_ids if source_ids is None else eval_ids & source_ids  # unknown source: assume all were used
    leaked = used - (excluded_ids or set())
    out.update(source_playlists_file=source_path, eval_playlists_held_out=len(used & (excluded_ids or set())),
               eval_playlists_not_used=len(eval_ids - used), eval_playlists_leaked=len(leaked), leaks=bool(leaked))
    if source_problem:
        out["source_note"] = f"{source_problem}: every evaluated playlist counted as used"
    return out


def _record(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def feature_provenance(run_dir: Path | None, eval_playlist_ids: set[str]) -> dict:
    """Which playlists fed the playlist-derived features, and how many of the evaluated playlists were kept out of
    them (data README leakage rule), from what each feature file records for itself: ST's exclusion list from the
    ingest manifest that built the catalog, TC's from embeddings/TC.json (not from the last vectorize run)."""
    if run_dir is None:
        return {"note": "no run directory: feature provenance unknown"}
    eval_ids = set(eval_playlist_ids)
    emb = run_dir / "embeddings"
    out: dict[str, Any] = {}

    ingest = _record(run_dir / "ingest_manifest.json")
    st = _record(emb / "ST.json")
    if ingest is None:
        out["ST"] = {"note": f"{run_dir / 'ingest_manifest.json'} not found"}
    elif ingest.get("config", {}).get("source") != "spotify":  # only that source turns playlist labels into tags
        out["ST"] = {"note": f"tags of source {ingest.get('config', {}).get('source')!r} are not built from playlists"}
    elif st is not None and st.get("status") == "absent":
        out["ST"] = {"note": "ST absent: no tags, nothing to leak"}
    else:
        outputs = ingest.get("outputs") if isinstance(ingest.get("outputs"), dict) else {}
        built_from = ((st or {}).get("inputs") or {}).get("catalog") or {}
        described = outputs.get("catalog") if isinstance(outputs.get("catalog"), dict) else {}
        if built_from.get("sha256") and described.get("sha256") and built_from["sha256"] != described["sha256"]:
            out["ST"] = {"eval_playlists": len(eval_ids), "excluded_playlists_file": None, "leaks": None,
                         "note": "ST was built from another catalog than ingest_manifest.json describes"}
        else:
            excluded = ingest.get("inputs", {}).get("exclude_tag_playlists") or \
                ingest.get("config", {}).get("exclude_tag_playlists")
            playlists = outputs.get("playlists")
            source = ({"path": str(run_dir / playlists["file"]), "sha256": playlists.get("sha256")}
                      if isinstance(playlists, dict) else None)
            out["ST"] = _held_out(eval_ids, excluded, source)

    tc = _record(emb / "TC.json")
    if tc is None:  # no TC record: what the vectorize manifest says (TC was not built by this version)
        manifest = emb / "manifest.json"
        if not manifest.exists():
            out["TC"] = {"note": f"{emb / 'TC.json'} not found"}
        else:
            config = json.loads(manifest.read_text()).get("config", {})
            out["TC"] = _held_out(eval_ids, config.get("tc_exclude_playlists"), None)
    elif tc.get("status") == "absent":
        out["TC"] = {"note": "TC absent: no playlists, nothing to leak"}
    elif not isinstance(tc.get("inputs"), dict) or "playlists" not in tc["inputs"]:
        out["TC"] = {"eval_playlists": len(eval_ids), "excluded_playlists_file": None, "leaks": None,
                     "note": "TC.json records no exclusion list (built by an older version; re-run vectorize "
                             "--modalities TC --overwrite)"}
    else:
        out["TC"] = _held_out(eval_ids, tc["inputs"].get("tc_exclude_playlists"), tc["inputs"].get("playlists"))
    return out


def provenance_line(prov: dict) -> str:
    if "note" in prov:
        return prov["note"]
    parts = []
    for m, p in prov.items():
        if "eval_playlists" not in p:
            parts.append(f"{m}: {p.get('note', 'unknown')}")
            continue
        if p["leaks"] is None:
            parts.append(f"{m} features: UNVERIFIED ({p['note']})")
            continue
        state = (f"LEAKS ({p['eval_playlists_leaked']} evaluated playlists were built into them)" if p["leaks"]
                 else "clean")
        not_used = f", {p['eval_playlists_not_used']} not used by any feature" if p["eval_playlists_not_used"] else ""
        parts.append(f"{m} features held out {p['eval_playlists_held_out']}/{p['eval_playlists']} evaluated "
                     f"playlists ({p['excluded_playlists_file'] or 'no exclusion list'}){not_used}: {state}")
    return "; ".join(parts)


def input_record(path: str | Path | None) -> dict | None:
    return {"path": str(path), "sha256": file_sha256(path)} if path and Path(path).exists() else None
