"""Tests of the demo catalog generator: determinism, valid records, missing-data shares and learnable structure."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from data_gen.catalog.reader import normalize_record
from data_gen.catalog.sources.demo import ARTIST_PLAYLIST_NAMES, DEFAULT_NUM_TRACKS, GENRES, generate_demo

REPO = Path(__file__).resolve().parents[3]
MODALITY_FIELDS = {
    "AC": ("artist_roles",), "BM": ("title", "artist", "album"), "ST": ("tags",), "SC": ("audio_features",),
    "MC": ("tempo", "key", "mode"), "RI": ("release_date",), "SF": ("song_facts",), "AB": ("artist_bio",),
}
# Intended share of tracks missing each modality, with room for sampling noise.
MISSING_BANDS = {"AC": (0.07, 0.13), "BM": (0.001, 0.015), "ST": (0.03, 0.07), "SC": (0.03, 0.07),
                 "MC": (0.015, 0.05), "RI": (0.025, 0.06), "SF": (0.20, 0.30), "AB": (0.05, 0.11)}


@pytest.fixture(scope="module")
def demo():
    return generate_demo(DEFAULT_NUM_TRACKS, seed=0)


@pytest.fixture(scope="module")
def records(demo):
    return demo[0]


@pytest.fixture(scope="module")
def playlists(demo):
    return demo[1]


def _present(rec: dict, modality: str) -> bool:
    return any(rec.get(f) is not None for f in MODALITY_FIELDS[modality])


def _digest(records, playlists) -> str:
    return json.dumps([records, [p.to_json() for p in playlists]], sort_keys=True)


def test_same_seed_same_output_and_other_seed_differs(demo):
    assert _digest(*generate_demo(DEFAULT_NUM_TRACKS, seed=0)) == _digest(*demo)
    other_records, other_playlists = generate_demo(DEFAULT_NUM_TRACKS, seed=1)
    assert _digest(other_records, other_playlists) != _digest(*demo)
    differing = sum(a["title"] != b["title"] or a["genre"] != b["genre"] for a, b in zip(demo[0], other_records))
    assert differing > 0.5 * DEFAULT_NUM_TRACKS


def test_output_does_not_depend_on_hash_seed():
    code = ("import hashlib, json; from data_gen.catalog.sources.demo import generate_demo; "
            "r, p = generate_demo(300, 3); "
            "print(hashlib.sha1(json.dumps([r, [x.to_json() for x in p]], sort_keys=True).encode()).hexdigest())")
    digests = {
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PYTHONHASHSEED": seed, "PATH": ""},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_records_are_valid_catalog_rows(records):
    assert len(records) == DEFAULT_NUM_TRACKS
    ids = [r["track_id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"demo-\d{6}", i) for i in ids)
    for row, rec in enumerate(records, start=1):
        norm = normalize_record(rec, "demo", row)
        assert norm["genre"] is not None
    dims = {len(r["audio_features"]) for r in records if r["audio_features"] is not None}
    assert dims == {9}


@pytest.mark.parametrize("num_tracks", [1, 7, 40, 250])
def test_small_catalogs_work(num_tracks):
    records, playlists = generate_demo(num_tracks, seed=5)
    assert len(records) == num_tracks
    ids = {r["track_id"] for r in records}
    assert playlists and all(set(p.tracks) <= ids for p in playlists)
    for row, rec in enumerate(records, start=1):
        normalize_record(rec, "demo", row)


def test_num_tracks_must_be_positive():
    with pytest.raises(ValueError):
        generate_demo(0)


def test_feature_values_have_spotify_ranges(records):
    feats = [r["audio_features"] for r in records if r["audio_features"] is not None]
    for i in (0, 1, 3, 4, 5, 6, 7):
        assert all(0.0 <= f[i] <= 1.0 for f in feats)
    assert all(-35.0 <= f[2] <= 0.0 for f in feats)
    assert all(1.0 <= f[8] <= 15.0 for f in feats)
    tempos = [r["tempo"] for r in records if r["tempo"] is not None]
    assert 40 <= min(tempos) and max(tempos) <= 220
    assert {r["key"] for r in records if r["key"] is not None} == set(range(12))
    assert {r["mode"] for r in records if r["mode"] is not None} == {0, 1}


def test_missing_shares_per_modality(records):
    n = len(records)
    for modality, (lo, hi) in MISSING_BANDS.items():
        missing = sum(not _present(r, modality) for r in records) / n
        assert lo <= missing <= hi, (modality, missing)
    assert all(any(_present(r, m) for m in MODALITY_FIELDS) for r in records)
    # MC missing means tempo and key both gone; a key alone may also be undetermined.
    assert all(r["key"] is None for r in records if r["tempo"] is None)
    assert sum(r["key"] is None and r["tempo"] is not None for r in records) > 0


def test_release_dates_mix_formats_and_span_eras(records):
    dates = [r["release_date"] for r in records if r["release_date"] is not None]
    shapes = Counter(len(d.split("-")) for d in dates)
    assert shapes[3] > 0.5 * len(dates) and shapes[2] > 0.05 * len(dates) and shapes[1] > 0.05 * len(dates)
    years = [int(d[:4]) for d in dates]
    assert 1950 <= min(years) < 1960 and 2020 <= max(years) <= 2024


def test_genre_structure_is_learnable(records):
    by_genre = defaultdict(list)
    for r in records:
        by_genre[r["genre"]].append(r)
    assert set(by_genre) == {g.name for g in GENRES} and 8 <= len(by_genre) <= 12
    assert min(len(v) for v in by_genre.values()) > 0.03 * len(records)

    def mean(genre, get):
        return statistics.mean(v for v in (get(r) for r in by_genre[genre]) if v is not None)

    def feature(i):
        return lambda r: None if r["audio_features"] is None else r["audio_features"][i]

    assert mean("edm", lambda r: r["tempo"]) - mean("ambient", lambda r: r["tempo"]) > 20
    assert mean("classical", feature(4)) - mean("edm", feature(4)) > 0.5  # acousticness
    assert mean("edm", feature(1)) - mean("classical", feature(1)) > 0.4  # energy
    assert mean("classical", feature(5)) > 0.7  # instrumentalness
    assert mean("hip hop", feature(3)) > 2 * mean("rock", feature(3))  # speechiness
    year = lambda r: None if r["release_date"] is None else int(r["release_date"][:4])  # noqa: E731
    assert mean("edm", year) - mean("jazz", year) > 20
    assert mean("country", lambda r: r["mode"]) > mean("metal", lambda r: r["mode"]) + 0.3
    # Tags carry the genre label for nearly every tagged track.
    tagged = [r for r in records if r["tags"]]
    assert sum(r["genre"] in r["tags"] for r in tagged) / len(tagged) > 0.95


def test_artists_mostly_keep_their_genre_and_share_a_bio(records):
    by_artist = defaultdict(list)
    for r in records:
        if r["artist"] is not None:
            by_artist[r["artist"]].append(r)
    assert 0.07 * len(records) <= len(by_artist) <= 0.13 * len(records)
    multi = [rs for rs in by_artist.values() if len(rs) >= 3]
    purity = statistics.mean(Counter(r["genre"] for r in rs).most_common(1)[0][1] / len(rs) for rs in multi)
    assert purity > 0.8
    for rs in multi:
        assert len({r["artist_bio"] for r in rs if r["artist_bio"] is not None}) <= 1
    # Collaborations show up in the roles text and sometimes the title.
    featuring = [r for r in records if r["artist_roles"] and "Featuring " in r["artist_roles"]]
    assert 0.05 * len(records) < len(featuring) < 0.2 * len(records)
    assert any("(feat. " in (r["title"] or "") for r in records)


def _artist_of(name: str, artists: set[str]) -> str | None:
    for pattern in ARTIST_PLAYLIST_NAMES:
        prefix, suffix = pattern.split("{artist}")
        if name.startswith(prefix) and name.endswith(suffix):
            candidate = name[len(prefix):len(name) - len(suffix)]
            if candidate in artists:
                return candidate
    return None


def _genre_of(name: str) -> str | None:
    found = [g.name for g in GENRES
             if re.search(rf"(?<!\w){re.escape(g.display.lower())}(?!\w)", name.lower())]
    return found[0] if len(found) == 1 else None


def test_playlists_are_well_formed(records, playlists):
    ids = {r["track_id"] for r in records}
    assert 0.05 * len(records) <= len(playlists) <= 0.1 * len(records)
    assert len({p.playlist_id for p in playlists}) == len(playlists)
    assert all(re.fullmatch(r"demo-pl-\d{4}", p.playlist_id) for p in playlists)
    assert all(p.name.strip() for p in playlists)
    for p in playlists:
        assert 15 <= len(p.tracks) <= 60
        assert len(set(p.tracks)) == len(p.tracks)
        assert set(p.tracks) <= ids
    covered = {t for p in playlists for t in p.tracks}
    assert len(covered) / len(records) > 0.8
    assert max(Counter(t for p in playlists for t in p.tracks).values()) > 1  # tracks can be in several


def test_playlists_follow_their_themes(records, playlists):
    by_id = {r["track_id"]: r for r in records}
    artists = {r["artist"] for r in records if r["artist"]}
    genre_scores, artist_scores, slow_scores = [], [], []
    for p in playlists:
        tracks = [by_id[t] for t in p.tracks]
        artist = _artist_of(p.name, artists)
        if artist is not None:
            hits = [r["artist"] == artist or artist in (r["artist_roles"] or "") or artist in (r["title"] or "")
                    for r in tracks]
            artist_scores.append(sum(hits) / len(hits))
            continue
        genre = _genre_of(p.name)
        if genre is not None:
            genre_scores.append(sum(r["genre"] == genre for r in tracks) / len(tracks))
        elif "acoustic" in p.name.lower():
            known = [r for r in tracks if r["tempo"] is not None and r["audio_features"] is not None]
            slow_scores.append(sum(r["tempo"] < 100 and r["audio_features"][4] > 0.55 for r in known) / len(known))
    kinds = Counter("genre" if _genre_of(p.name) else "other" for p in playlists)
    assert kinds["genre"] > 0.4 * len(playlists) and kinds["other"] > 0.1 * len(playlists)
    assert len(genre_scores) > 50 and statistics.mean(genre_scores) > 0.8 and min(genre_scores) >= 0.7
    assert len(artist_scores) >= 5 and statistics.mean(artist_scores) > 0.75
    assert slow_scores and statistics.mean(slow_scores) > 0.7
    # Names are human-like and varied: several kinds of theme, few exact repeats.
    names = [p.name for p in playlists]
    assert len(set(names)) == len(names)
    assert any(re.match(r"\d0s ", n) for n in names) and any(n.startswith("This Is ") for n in names)
