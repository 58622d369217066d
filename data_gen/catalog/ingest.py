"""Stage 1a: a catalog source -> `run_dir/catalog.parquet`, `playlists.jsonl`, `rejected.jsonl`,
`rejected_playlists.jsonl`, `ingest_manifest.json`.

    music3m-ingest --source spotify --input spotify_songs.csv --run_dir runs/spotify    (or --source demo | catalog)

Every record and playlist is validated (data_gen/catalog/reader.py, playlists.py): `--on_error fail` stops at the
first bad row, `--on_error skip` writes it to its rejected file. The manifest's counts reconcile: read = kept +
duplicates_merged + rejected for tracks, playlists_read = playlists + playlists_rejected for playlists. Outputs are
written into a staging folder and moved into place only when the whole stage succeeded; the manifest records their
checksums, so that later stages can refuse a run directory whose files are not the ones it describes.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config
from common.manifest import write_manifest
from data_gen.catalog.playlists import PlaylistReader, ingest_playlists, read_id_list
from data_gen.catalog.reader import CatalogError, RowError, catalog_track_ids, ingest_records, iter_raw_records

MANIFEST = "ingest_manifest.json"
# output name in the manifest -> file in the run directory (playlists only when there are any)
OUTPUTS = {"catalog": "catalog.parquet", "rejected": "rejected.jsonl", "playlists": "playlists.jsonl",
           "rejected_playlists": "rejected_playlists.jsonl"}
STAGING = ".ingest.staging"


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
    on_error: str = field(default="fail", metadata={
        "help": "bad rows and playlists: fail (stop) or skip (write to rejected.jsonl / rejected_playlists.jsonl)",
        "choices": ["fail", "skip"]})
    download: bool = field(default=False, metadata={"help": "spotify: download the public CSV into the cache"})
    cache_dir: str | None = field(default=None, metadata={"help": "download cache (default ~/.cache/music3m)"})
    exclude_tag_playlists: str | None = field(default=None, metadata={
        "help": "spotify: file of playlist ids whose genre labels must not become ST tags (evaluation split)"})
    num_tracks: int = field(default=3000, metadata={"help": "demo: number of generated tracks"})
    seed: int = field(default=0, metadata={"help": "demo: generator seed"})


def _commit(staging: Path, run_dir: Path) -> None:
    """Move the staged outputs into the run directory, the manifest last. An output this run did not produce is
    removed (an old playlists.jsonl must not pass for this run's). Until the manifest is replaced, a crash here
    leaves files that the old manifest's checksums do not match, which later stages refuse."""
    for name in OUTPUTS.values():
        if (staging / name).exists():
            os.replace(staging / name, run_dir / name)
        else:
            (run_dir / name).unlink(missing_ok=True)
    os.replace(staging / MANIFEST, run_dir / MANIFEST)


def run(cfg: IngestConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = run_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        counts = _ingest(cfg, run_dir, staging)
        _commit(staging, run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _ingest(cfg: IngestConfig, run_dir: Path, staging: Path) -> dict:
    source_counts: dict = {}
    inputs: dict[str, Path | str | None] = {}
    playlist_records = None
    playlists_label = None
    if cfg.source == "demo":
        from data_gen.catalog.sources.demo import generate_demo

        raw, playlists = generate_demo(cfg.num_tracks, cfg.seed)
        records = list(enumerate(raw, start=1))
        file_label = f"demo(num_tracks={cfg.num_tracks}, seed={cfg.seed})"
        playlist_records = [(i, p.to_json()) for i, p in enumerate(playlists, start=1)]
        playlists_label = f"{file_label} playlists"
    elif cfg.source == "spotify":
        from data_gen.catalog.sources.spotify import download_spotify, load_spotify

        path = Path(cfg.input) if cfg.input else None
        if path is None:
            if not cfg.download:
                raise CatalogError("--source spotify needs --input PATH or --download")
            path = download_spotify(cfg.cache_dir)
        exclude = read_id_list(cfg.exclude_tag_playlists) if cfg.exclude_tag_playlists else set()
        records, playlists, source_counts = load_spotify(path, exclude_tag_playlists=exclude)
        file_label = str(path)
        inputs = {"input": path, "exclude_tag_playlists": cfg.exclude_tag_playlists}
        playlist_records = [(i, p.to_json()) for i, p in enumerate(playlists, start=1)]
        playlists_label = f"{path} (playlists)"
    else:
        if not cfg.input:
            raise CatalogError("--source catalog needs --input PATH")
        records = iter_raw_records(cfg.input)
        file_label = cfg.input
        inputs = {"input": Path(cfg.input), "playlists": cfg.playlists}
        if cfg.playlists:
            playlist_records = PlaylistReader(cfg.playlists)  # checked before the catalog is read
            playlists_label = cfg.playlists

    staged = {name: staging / file for name, file in OUTPUTS.items()}
    report = ingest_records(records, file_label, staged["catalog"], staged["rejected"], on_error=cfg.on_error)
    counts = {**report.to_json(), "source_counts": source_counts}
    warnings = list(report.warnings)
    if playlist_records is not None:
        known = set(catalog_track_ids(staged["catalog"]))
        preport = ingest_playlists(playlist_records, playlists_label, known, report.rejected_track_ids,
                                   staged["playlists"], staged["rejected_playlists"], on_error=cfg.on_error)
        counts.update(preport.to_counts())
        warnings += preport.warnings
        if not preport.kept:
            staged["playlists"].unlink()
    else:
        counts.update({"playlists_read": 0, "playlists": 0, "playlists_rejected": 0, "playlist_entries": 0})
    counts["warnings"] = warnings
    outputs = {name: path for name, path in staged.items() if path.exists()}
    write_manifest(staging / MANIFEST, "ingest", cfg, inputs=inputs, counts=counts, outputs=outputs)
    return counts


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(IngestConfig, argv)
    try:
        counts = run(cfg)
    except (CatalogError, RowError) as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, RowError):
            print("hint: --on_error skip writes bad rows to rejected.jsonl (bad playlists to "
                  "rejected_playlists.jsonl) and keeps going", file=sys.stderr)
        print(f"{cfg.run_dir}: left as it was (no output written)", file=sys.stderr)
        sys.exit(2)
    run_dir = Path(cfg.run_dir)
    src = counts["source_counts"]
    if "csv_rows" in src:  # spotify: one CSV row per (playlist, track) membership
        print(f"{src['csv_rows']:,} CSV rows = {src['unique_tracks']:,} tracks + {src['membership_rows_merged']:,} "
              f"membership rows merged + {src['rows_rejected_here']:,} rejected")
    print(f"read {counts['read']:,} records: kept {counts['kept']:,}, merged duplicates "
          f"{counts['duplicates_merged']:,}, rejected {counts['rejected']:,}; {counts['playlists']:,} playlists")
    if counts["playlists_read"]:
        print(f"read {counts['playlists_read']:,} playlists: kept {counts['playlists']:,}, rejected "
              f"{counts['playlists_rejected']:,}; {counts['playlist_entries']:,} entries kept, dropped: "
              f"{counts['playlist_entries_dropped_not_in_catalog']:,} not in the catalog, "
              f"{counts['playlist_entries_dropped_rejected_tracks']:,} of rejected tracks, "
              f"{counts['playlist_entries_dropped_duplicates']:,} repeated")
    if counts["rejected"]:
        print(f"rejected rows: {run_dir / OUTPUTS['rejected']}")
    if counts["playlists_rejected"]:
        print(f"rejected playlists: {run_dir / OUTPUTS['rejected_playlists']}")
    for message in counts["warnings"]:
        print(f"warning: {message}")
    print(f"catalog: {run_dir / OUTPUTS['catalog']}")


if __name__ == "__main__":
    main()
