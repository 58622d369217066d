"""Playlists / listening sessions: JSONL of {playlist_id, name, tracks} <-> `Playlist` objects.

`tracks` keeps its order and drops duplicates. TC (track2vec) is learned from such a file and every evaluation takes
one through `--playlists`; `split_playlists` splits by playlist id, so evaluation playlists stay out of the features.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.catalog.reader import CatalogError, RowError


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


def read_playlists(path: str | Path, known_tracks: set[str] | None = None) -> list[Playlist]:
    """Read and validate a playlists JSONL file.

    Raises RowError naming the line and field for malformed lines, duplicate playlist ids, or (when
    `known_tracks` is given) track ids that are not in the catalog.
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: playlists file not found")
    out: list[Playlist] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for row, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise RowError(path, row, "<line>", f"invalid JSON ({err.msg})", line.strip()) from None
            if not isinstance(obj, dict):
                raise RowError(path, row, "<line>", "expected a JSON object", obj)
            pid = obj.get("playlist_id")
            if not isinstance(pid, str) or not pid:
                raise RowError(path, row, "playlist_id", "missing or not a string", pid)
            if pid in seen:
                raise RowError(path, row, "playlist_id", "duplicate playlist_id", pid)
            name = obj.get("name", "")
            if not isinstance(name, str):
                raise RowError(path, row, "name", "expected a string", name)
            tracks = obj.get("tracks")
            if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
                raise RowError(path, row, "tracks", "expected a list of track_id strings", tracks)
            if known_tracks is not None:
                unknown = [t for t in tracks if t not in known_tracks]
                if unknown:
                    raise RowError(path, row, "tracks", f"{len(unknown)} track_id(s) not in the catalog", unknown[:3])
            seen.add(pid)
            out.append(Playlist(pid, name, list(dict.fromkeys(tracks))))
    if not out:
        raise CatalogError(f"{path}: no playlists")
    return out


def read_id_list(path: str | Path) -> set[str]:
    """A text file with one id per line (blank lines and '#' comments ignored) -> set of ids."""
    with open(path, encoding="utf-8") as fh:
        return {s for s in (line.split("#", 1)[0].strip() for line in fh) if s}


def split_playlists(playlists: list[Playlist], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split playlist ids into (train, eval) with a fixed seed; deterministic for the same ids and seed."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    ids = sorted(p.playlist_id for p in playlists)
    random.Random(seed).shuffle(ids)
    n_eval = max(1, round(len(ids) * eval_fraction))
    return sorted(ids[n_eval:]), sorted(ids[:n_eval])
