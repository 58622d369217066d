"""Stage 1a: a catalog source -> `run_dir/catalog.parquet`, `playlists.jsonl`, `rejected.jsonl`, `ingest_manifest.json`.

    music3m-ingest --source spotify --input spotify_songs.csv --run_dir runs/spotify    (or --source demo | catalog)

Every record is validated (data_gen/catalog/reader.py): `--on_error fail` stops at the first bad row, `--on_error skip`
writes it to rejected.jsonl. The manifest's counts reconcile: read = kept + duplicates_merged + rejected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config
from common.manifest import write_manifest
from data_gen.catalog.playlists import Playlist, read_id_list, read_playlists, write_playlists
from data_gen.catalog.reader import CatalogError, RowError, catalog_track_ids, ingest_records, iter_raw_records


@dataclass
class IngestConfig:
    """Ingest a music catalog into a run directory."""

    run_dir: str = field(metadata={"help": "output run directory"})
    source: str = field(default="catalog", metadata={
        "help": "demo (generated), spotify (Spotify Songs CSV), or catalog (parquet/JSONL/CSV in the catalog format)",
        "choices": ["demo", "spotify", "catalog"]})
    input: str | None = field(default=None, metadata={"help": "input file (spotify CSV or catalog file)"})
    playlists: str | None = field(default=None, metadata={
        "help": "playlists/sessions JSONL for --source catalog (playlist_id, name, tracks)"})
    on_error: str = field(default="fail", metadata={"help": "bad rows: fail (stop) or skip (write to rejected.jsonl)",
                                                      "choices": ["fail", "skip"]})
    download: bool = field(default=False, metadata={"help": "spotify: download the public CSV into the cache"})
    cache_dir: str | None = field(default=None, metadata={"help": "download cache (default ~/.cache/music3m)"})
    exclude_tag_playlists: str | None = field(default=None, metadata={
        "help": "spotify: file of playlist ids whose genre labels must not become ST tags (evaluation split)"})
    num_tracks: int = field(default=3000, metadata={"help": "demo: number of generated tracks"})
    seed: int = field(default=0, metadata={"help": "demo: generator seed"})


def _filter_playlists(playlists: list[Playlist], known: set[str]) -> tuple[list[Playlist], int]:
    """Drop playlist entries whose track was rejected; report how many were dropped (nothing vanishes silently)."""
    dropped = 0
    out = []
    for p in playlists:
        kept = [t for t in p.tracks if t in known]
        dropped += len(p.tracks) - len(kept)
        if kept:
            out.append(Playlist(p.playlist_id, p.name, kept))
    return out, dropped


def run(cfg: IngestConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    catalog_path, rejected_path = run_dir / "catalog.parquet", run_dir / "rejected.jsonl"
    source_counts: dict = {}
    inputs: dict[str, Path | None] = {}
    if cfg.source == "demo":
        from data_gen.catalog.sources.demo import generate_demo

        raw, playlists = generate_demo(cfg.num_tracks, cfg.seed)
        records = ((i, rec) for i, rec in enumerate(raw, start=1))
        file_label = f"demo(num_tracks={cfg.num_tracks}, seed={cfg.seed})"
    elif cfg.source == "spotify":
        from data_gen.catalog.sources.spotify import download_spotify, load_spotify

        path = Path(cfg.input) if cfg.input else None
        if path is None:
            if not cfg.download:
                raise CatalogError("--source spotify needs --input PATH or --download")
            path = download_spotify(cfg.cache_dir)
        exclude = read_id_list(cfg.exclude_tag_playlists) if cfg.exclude_tag_playlists else set()
        rows, playlists, source_counts = load_spotify(path, exclude_tag_playlists=exclude)
        records = iter(rows)
        file_label = str(path)
        inputs = {"input": path, "exclude_tag_playlists": cfg.exclude_tag_playlists}
    else:
        if not cfg.input:
            raise CatalogError("--source catalog needs --input PATH")
        records = iter_raw_records(cfg.input)
        file_label = cfg.input
        playlists = []
        inputs = {"input": Path(cfg.input), "playlists": cfg.playlists}

    report = ingest_records(records, file_label, catalog_path, rejected_path, on_error=cfg.on_error)
    known = set(catalog_track_ids(catalog_path))
    if cfg.source == "catalog" and cfg.playlists:
        playlists = read_playlists(cfg.playlists)
    playlists, dropped = _filter_playlists(playlists, known)
    n_playlists = write_playlists(playlists, run_dir / "playlists.jsonl") if playlists else 0
    if not playlists:
        (run_dir / "playlists.jsonl").unlink(missing_ok=True)
    counts = {**report.to_json(), "source_counts": source_counts, "playlists": n_playlists,
              "playlist_entries_dropped_for_rejected_tracks": dropped,
              "playlist_entries": sum(len(p.tracks) for p in playlists)}
    write_manifest(run_dir / "ingest_manifest.json", "ingest", cfg, inputs=inputs, counts=counts,
                   extra={"outputs": {"catalog": str(catalog_path), "rejected": str(rejected_path),
                                      "playlists": str(run_dir / "playlists.jsonl") if n_playlists else None}})
    return counts


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(IngestConfig, argv)
    try:
        counts = run(cfg)
    except (CatalogError, RowError) as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, RowError):
            print("hint: --on_error skip writes bad rows to rejected.jsonl and keeps going", file=sys.stderr)
        sys.exit(2)
    print(f"read {counts['read']:,} records: kept {counts['kept']:,}, merged duplicates "
          f"{counts['duplicates_merged']:,}, rejected {counts['rejected']:,}; {counts['playlists']:,} playlists")
    if counts["rejected"]:
        print(f"rejected rows: {Path(cfg.run_dir) / 'rejected.jsonl'}")
    print(f"catalog: {Path(cfg.run_dir) / 'catalog.parquet'}")


if __name__ == "__main__":
    main()
