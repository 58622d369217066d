"""Playlists / listening sessions: JSONL of {playlist_id, name, tracks} <-> `Playlist` objects.

`tracks` keeps its order and drops duplicates. TC (track2vec) is learned from such a file and every evaluation takes
one through `--playlists`; `split_playlists` splits by playlist id, so evaluation playlists stay out of the features.
`read_playlists` stops at the first bad line; `ingest_playlists` (the ingest stage) follows `--on_error`, writes bad
lines to their own rejected file and counts every entry it drops, by reason.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_gen.catalog.reader import (
    CatalogError,
    RowError,
    has_bad_bytes,
    iter_jsonl_objects,
    jsonable,
    sniff_text_encoding,
    write_rejection,
)


@dataclass
class Playlist:
    playlist_id: str
    name: str
    tracks: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"playlist_id": self.playlist_id, "name": self.name, "tracks": self.tracks}


def write_playlists(playlists: Iterable[Playlist], path: str | Path) -> int:
    """Write playlists as JSONL (atomically); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for p in playlists:
            fh.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


class PlaylistReader:
    """A playlists JSONL file -> (1-based line number, JSON object or RowError) pairs; `notes` as CatalogReader's."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CatalogError(f"{path}: playlists file not found")
        if self.path.stat().st_size == 0:
            raise CatalogError(f"{path}: playlists file is empty")
        self.codec, note = sniff_text_encoding(self.path)
        self.notes = [note] if note else []

    def __iter__(self) -> Iterator[tuple[int, dict | RowError]]:
        yield from iter_jsonl_objects(self.path, self.codec)


def parse_playlist(obj: dict, file: str | Path, row: int, require_name: bool = False) -> Playlist:
    """One JSON object -> Playlist (tracks deduplicated, order kept); raises RowError naming the bad field.

    A missing `name` reads as "" unless `require_name` (ingest requires it: eval.t2mr uses names as requests)."""
    pid = obj.get("playlist_id")
    if not isinstance(pid, str) or not pid.strip():
        raise RowError(file, row, "playlist_id", "missing or not a string", pid)
    if has_bad_bytes(pid):
        raise RowError(file, row, "playlist_id", "invalid UTF-8 bytes (broken encoding)", pid)
    name = obj.get("name", None if require_name else "")
    if require_name and (name is None or (isinstance(name, str) and not name.strip())):
        raise RowError(file, row, "name", "missing or empty (playlist names are the requests of eval.t2mr)", name)
    if not isinstance(name, str):
        raise RowError(file, row, "name", "expected a string", name)
    if has_bad_bytes(name):
        raise RowError(file, row, "name", "invalid UTF-8 bytes (broken encoding)", name)
    tracks = obj.get("tracks")
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise RowError(file, row, "tracks", "expected a list of track_id strings", tracks)
    broken = next((t for t in tracks if has_bad_bytes(t)), None)
    if broken is not None:
        raise RowError(file, row, "tracks", "invalid UTF-8 bytes (broken encoding)", broken)
    return Playlist(pid, name, list(dict.fromkeys(tracks)))


def read_playlists(path: str | Path, known_tracks: set[str] | None = None) -> list[Playlist]:
    """Read and validate a playlists JSONL file.

    Raises RowError naming the line and field for malformed lines, duplicate playlist ids, or (when
    `known_tracks` is given) track ids that are not in the catalog.
    """
    path = Path(path)
    out: list[Playlist] = []
    seen: set[str] = set()
    for row, obj in PlaylistReader(path):
        if isinstance(obj, RowError):
            raise obj
        p = parse_playlist(obj, path, row)
        if p.playlist_id in seen:
            raise RowError(path, row, "playlist_id", "duplicate playlist_id", p.playlist_id)
        if known_tracks is not None:
            unknown = [t for t in p.tracks if t not in known_tracks]
            if unknown:
                raise RowError(path, row, "tracks", f"{len(unknown)} track_id(s) not in the catalog", unknown[:3])
        seen.add(p.playlist_id)
        out.append(p)
    if not out:
        raise CatalogError(f"{path}: no playlists")
    return out


@dataclass
class PlaylistReport:
    """Counts of one playlists ingestion. `read == kept + rejected`, and every entry of a playlist that parsed is
    kept or dropped for a named reason: entries_read == entries_kept + the three entries_dropped_* counts."""

    source: str
    read: int = 0
    kept: int = 0
    rejected: int = 0
    rejected_by_reason: dict = field(default_factory=dict)
    entries_read: int = 0
    entries_kept: int = 0
    entries_dropped_duplicates: int = 0  # a track repeated within one playlist
    entries_dropped_rejected_tracks: int = 0  # the track's catalog row was rejected by this ingest
    entries_dropped_not_in_catalog: int = 0  # the catalog never had the track
    warnings: list = field(default_factory=list)

    def check(self) -> None:
        dropped = (self.entries_dropped_duplicates + self.entries_dropped_rejected_tracks
                   + self.entries_dropped_not_in_catalog)
        if self.read != self.kept + self.rejected or self.entries_read != self.entries_kept + dropped:
            raise AssertionError(f"playlist counts do not reconcile: {asdict(self)}")

    def to_counts(self) -> dict:
        """The manifest's playlist counts (`playlists` = playlists kept, `playlist_entries` = entries kept)."""
        return {"playlists_read": self.read, "playlists": self.kept, "playlists_rejected": self.rejected,
                "playlists_rejected_by_reason": self.rejected_by_reason,
                "playlist_entries_read": self.entries_read, "playlist_entries": self.entries_kept,
                "playlist_entries_dropped_duplicates": self.entries_dropped_duplicates,
                "playlist_entries_dropped_rejected_tracks": self.entries_dropped_rejected_tracks,
                "playlist_entries_dropped_not_in_catalog": self.entries_dropped_not_in_catalog}


def ingest_playlists(records: Iterable[tuple[int, dict | RowError]], file: str | Path, catalog_ids: set[str],
                     rejected_track_ids: set[str], out_path: str | Path, rejected_path: str | Path,
                     on_error: str = "fail") -> PlaylistReport:
    """Validate playlists against the ingested catalog; write the kept ones to `out_path` (JSONL), bad lines to
    `rejected_path` (on_error="skip") or raise the first RowError (on_error="fail").

    A bad line, a missing name, a duplicate playlist_id, an empty playlist or one with no track in the catalog is a
    row error. Entries naming tracks outside the catalog are dropped, counted by reason and printed."""
    report = PlaylistReport(source=str(file))
    for note in getattr(records, "notes", ()):
        report.warnings.append(note)
        print(f"warning: {note}", file=sys.stderr)
    first_row: dict[str, int] = {}
    examples: dict[str, tuple[int, str]] = {}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as out, open(rejected_path, "w", encoding="utf-8") as rej:
        for row, obj in records:
            report.read += 1
            try:
                if isinstance(obj, RowError):
                    raise obj
                p = parse_playlist(obj, file, row, require_name=True)
                if p.playlist_id in first_row:
                    raise RowError(file, row, "playlist_id",
                                   f"duplicate playlist_id (first in row {first_row[p.playlist_id]})", p.playlist_id)
                first_row[p.playlist_id] = row
                if not p.tracks:
                    raise RowError(file, row, "tracks", "empty playlist (no tracks)", obj.get("tracks"))
                report.entries_read += len(obj["tracks"])
                report.entries_dropped_duplicates += len(obj["tracks"]) - len(p.tracks)
                kept = [t for t in p.tracks if t in catalog_ids]
                for t in p.tracks:
                    if t in catalog_ids:
                        continue
                    reason = "rejected" if t in rejected_track_ids else "unknown"
                    if reason == "rejected":
                        report.entries_dropped_rejected_tracks += 1
                    else:
                        report.entries_dropped_not_in_catalog += 1
                    examples.setdefault(reason, (row, t))
                if not kept:
                    raise RowError(file, row, "tracks", f"none of its {len(p.tracks)} tracks is in the catalog",
                                   p.tracks[:3])
                report.entries_kept += len(kept)
                out.write(json.dumps(Playlist(p.playlist_id, p.name, kept).to_json(), ensure_ascii=False) + "\n")
                report.kept += 1
            except RowError as err:
                if on_error == "fail":
                    raise
                write_rejection(report, err, obj, rej)
    for count, what, key in (
            (report.entries_dropped_not_in_catalog, "name tracks that are not in the catalog", "unknown"),
            (report.entries_dropped_rejected_tracks, "name tracks whose catalog rows were rejected", "rejected"),
            (report.entries_dropped_duplicates, "repeat a track within their playlist", None)):
        if count:
            row, t = examples.get(key, (None, None))
            first = f" (first: row {row}, track '{jsonable(t)}')" if row else ""
            message = f"{file}: {count:,} playlist entries {what}: dropped{first}"
            report.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr)
    if report.read and not report.kept:
        raise CatalogError(f"{file}: no valid playlists ({report.read} read, {report.rejected} rejected)")
    report.check()
    return report


def read_id_list(path: str | Path) -> set[str]:
    """A text file with one id per line (blank lines and '#' comments ignored) -> set of ids."""
    with open(path, encoding="utf-8") as fh:
        return {s for s in (line.split("#", 1)[0].strip() for line in fh) if s}


def split_playlists(playlists: list[Playlist], eval_fraction: float, seed: int,
                    fold: int = 0) -> tuple[list[str], list[str]]:
    """Split playlist ids into (train, eval) with a fixed seed; deterministic for the same ids and seed. `fold` k takes
    the k-th block of the same shuffled order, so folds 0, 1, ... of one seed are disjoint (cross-validation)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    ids = sorted(p.playlist_id for p in playlists)
    random.Random(seed).shuffle(ids)
    n_eval = max(1, round(len(ids) * eval_fraction))
    if not 0 <= fold < len(ids) // n_eval:
        raise ValueError(f"fold must be in [0, {len(ids) // n_eval}) for {len(ids)} playlists and eval_fraction "
                         f"{eval_fraction}, got {fold}")
    held = ids[fold * n_eval:(fold + 1) * n_eval]
    return sorted(set(ids) - set(held)), sorted(held)
