"""Spotify Songs (TidyTuesday) CSV -> one raw catalog record per track + its playlists.

Rows are (track, playlist) memberships, merged per track. BM = track name/artist/album, ST = the playlists' genre and
subgenre, SC = the audio-feature vector, MC = tempo/key/mode, RI = album release date, TC = the playlists; no AC, SF,
AB. Spotify's "unknown" (tempo 0, key -1, "NA") becomes missing. ST and TC come from playlists: pass the evaluation
playlists as `exclude_tag_playlists` here and `--tc_exclude_playlists` to vectorize.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from data_gen.catalog.playlists import Playlist
from data_gen.catalog.reader import CatalogError, RowError

SPOTIFY_URL = ("https://raw.githubusercontent.com/rfordatascience/tidytuesday/master/data/2020/2020-01-21/"
               "spotify_songs.csv")
SC_FEATURES = ("danceability", "energy", "loudness", "speechiness", "acousticness", "instrumentalness",
               "liveness", "valence", "duration_ms")
TRACK_COLUMNS = ("track_name", "track_artist", "track_popularity", "track_album_id", "track_album_name",
                 "track_album_release_date", "key", "mode", "tempo", *SC_FEATURES)
PLAYLIST_COLUMNS = ("playlist_name", "playlist_id", "playlist_genre", "playlist_subgenre")
_R_NA = "NA"


def default_cache_dir() -> Path:
    return Path(os.environ.get("MUSIC3M_CACHE", Path.home() / ".cache" / "music3m"))


def download_spotify(cache_dir: str | Path | None = None, url: str = SPOTIFY_URL) -> Path:
    """Download the public CSV into the cache once (atomically) and return its path."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / "spotify_songs.csv"
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.part")
    print(f"downloading {url} -> {path}", file=sys.stderr)
    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310 (fixed https URL)
        while block := resp.read(1 << 20):
            sha.update(block)
            out.write(block)
    tmp.replace(path)
    print(f"downloaded {path.stat().st_size:,} bytes, sha256 {sha.hexdigest()}", file=sys.stderr)
    return path


def _text(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", _R_NA) else value


def _number(value: str, path: Path, row: int, column: str) -> float | None:
    value = value.strip()
    if value in ("", _R_NA):
        return None
    try:
        return float(value)
    except ValueError:
        raise RowError(path, row, column, "not a number", value) from None


def load_spotify(path: str | Path, exclude_tag_playlists: set[str] | None = None
                 ) -> tuple[list[tuple[int, dict | RowError]], list[Playlist], dict]:
    """Read the CSV -> ([(first CSV row of the track, raw catalog record or RowError)], playlists, row counts).

    Row counts reconcile: csv_rows = unique_tracks + membership_rows_merged + rows_rejected_here.

    Rows are numbered from 1 (the first data row, i.e. file line 2). Playlists whose id is in
    `exclude_tag_playlists` still appear in the playlists list but do not contribute ST tags.
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: file not found (pass --download to fetch the public file)")
    if path.stat().st_size == 0:
        raise CatalogError(f"{path}: file is empty")
    exclude = exclude_tag_playlists or set()
    tracks: dict[str, dict] = {}
    errors: list[tuple[int, RowError]] = []
    playlists: dict[str, Playlist] = {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("track_id", *TRACK_COLUMNS, *PLAYLIST_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise CatalogError(f"{path}: not a Spotify Songs CSV, missing columns {missing}")
        row_count = 0
        for row, raw in enumerate(reader, start=1):
            row_count = row
            tid = (raw.get("track_id") or "").strip()
            if not tid:
                errors.append((row, RowError(path, row, "track_id", "missing track_id", raw.get("track_id"))))
                continue
            track_part = tuple(raw[c] for c in TRACK_COLUMNS)
            entry = tracks.get(tid)
            if entry is None:
                entry = tracks[tid] = {"row": row, "track": track_part, "raw": raw, "tags": [], "genres": Counter()}
            elif entry["track"] != track_part:
                diff = next(c for c, a, b in zip(TRACK_COLUMNS, entry["track"], track_part) if a != b)
                errors.append((row, RowError(path, row, diff,
                                             f"track {tid} has a different {diff} in row {entry['row']}", raw[diff])))
                continue
            pid = raw["playlist_id"].strip()
            if pid:
                playlist = playlists.setdefault(pid, Playlist(pid, raw["playlist_name"].strip(), []))
                if tid not in playlist.tracks:
                    playlist.tracks.append(tid)
                genre, sub = raw["playlist_genre"].strip(), raw["playlist_subgenre"].strip()
                if genre:
                    entry["genres"][genre] += 1
                if pid not in exclude:
                    entry["tags"].extend(t for t in (genre, sub) if t)

    records: list[tuple[int, dict | RowError]] = list(errors)
    for tid, entry in tracks.items():
        raw, row = entry["raw"], entry["row"]
        try:
            tempo = _number(raw["tempo"], path, row, "tempo")
            key = _number(raw["key"], path, row, "key")
            features = [_number(raw[c], path, row, c) for c in SC_FEATURES]
        except RowError as err:
            err.track_id = tid  # its playlist entries are then counted as dropped for a rejected track
            records.append((row, err))
            continue
        if features and features[-1] is not None:
            features[-1] = features[-1] / 60000.0  # duration in minutes, on the scale of the other features
        genre = min(entry["genres"].items(), key=lambda kv: (-kv[1], kv[0]))[0] if entry["genres"] else None
        records.append((row, {
            "track_id": tid,
            "title": _text(raw["track_name"]),
            "artist": _text(raw["track_artist"]),
            "album": _text(raw["track_album_name"]),
            "tags": sorted(set(entry["tags"])) or None,
            "audio_features": None if any(f is None for f in features) else features,
            "tempo": None if tempo == 0 else tempo,
            "key": None if key == -1 else key,
            "mode": _text(raw["mode"]),
            "release_date": _text(raw["track_album_release_date"]),
            "genre": genre,
        }))
    records.sort(key=lambda item: item[0])
    stats = {"csv_rows": row_count, "unique_tracks": len(tracks),
             "membership_rows_merged": row_count - len(tracks) - len(errors), "rows_rejected_here": len(errors),
             "playlists": len(playlists)}
    return records, list(playlists.values()), stats


