"""A track's metadata as words per modality: mood words from named audio features (catalog quantiles), and
`modality_phrases(facts)` -> {modality: phrases} read by the query templates, the SFT alignment tasks and the
text initialisation of the music tokens, so that all three describe a track the same way.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_gen.catalog.reader import read_catalog
from data_gen.synth.track_facts import TrackFacts

# Words for a feature value in the top (high) or bottom (low) quarter of the catalog. Names are Spotify's audio
# features; a catalog whose features have other names gets no mood words.
FEATURE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "danceability": (("danceable", "dance"), ()),
    "energy": (("energetic", "high energy", "hype"), ("calm", "chill", "mellow")),
    "valence": (("happy", "feel good", "cheerful"), ("sad", "dark", "melancholic")),
    "acousticness": (("acoustic", "unplugged"), ()),
    "instrumentalness": (("instrumental",), ()),
    "speechiness": (("wordy", "spoken"), ()),
    "liveness": (("live",), ()),
    "loudness": (("loud",), ("quiet", "soft")),
}
# Situations from energy (or tempo when no energy is known): high, middle, low.
ACTIVITIES = {"high": ("workout", "party", "gym", "running"), "mid": ("road trip", "driving", "cooking"),
              "low": ("studying", "sleep", "relaxing", "reading")}
SOURCE_FEATURE_NAMES = {
    "spotify": ("danceability", "energy", "loudness", "speechiness", "acousticness", "instrumentalness", "liveness",
                "valence", "duration_ms"),
}


def audio_feature_names(run_dir: str | Path) -> tuple[str, ...] | None:
    """Names of the catalog's `audio_features` entries: the ingest manifest's `audio_feature_names`, else the known
    names of its source; None when unknown."""
    manifest = Path(run_dir) / "ingest_manifest.json"
    if not manifest.exists():
        return None
    info = json.loads(manifest.read_text())
    names = info.get("audio_feature_names")
    if names:
        return tuple(names)
    source = info.get("config", {}).get("source")
    if source == "demo":
        from data_gen.catalog.sources.demo import AUDIO_FEATURES

        return tuple(AUDIO_FEATURES)
    return SOURCE_FEATURE_NAMES.get(source)


@dataclass(frozen=True)
class AudioScale:
    """Per named audio feature: the catalog's 25th and 75th percentile -> mood words for a feature vector."""

    names: tuple[str, ...]
    low: np.ndarray   # float [F]
    high: np.ndarray  # float [F]

    @classmethod
    def from_catalog(cls, catalog: str | Path, names: Sequence[str]) -> AudioScale | None:
        rows = [r for b in read_catalog(catalog, columns=["audio_features"]) for r in b.column(0).to_pylist() if r]
        if not rows or len(rows[0]) != len(names):
            return None
        x = np.asarray(rows, dtype=np.float64)
        return cls(tuple(names), np.quantile(x, 0.25, axis=0), np.quantile(x, 0.75, axis=0))

    def level(self, vector: Sequence[float] | None, name: str) -> str | None:
        """'high', 'low' or 'mid' of one named feature; None when unknown."""
        if vector is None or name not in self.names:
            return None
        i = self.names.index(name)
        v = float(vector[i])
        return "high" if v >= self.high[i] else "low" if v <= self.low[i] else "mid"

    def words(self, vector: Sequence[float] | None) -> tuple[str, ...]:
        if vector is None:
            return ()
        out: list[str] = []
        for name, (high, low) in FEATURE_WORDS.items():
            lv = self.level(vector, name)
            out += high if lv == "high" else low if lv == "low" else ()
        return tuple(out)


def load_audio_scale(run_dir: str | Path, catalog: str | Path | None = None) -> AudioScale | None:
    names = audio_feature_names(run_dir)
    if names is None:
        return None
    return AudioScale.from_catalog(catalog or Path(run_dir) / "catalog.parquet", names)


def activities(facts: TrackFacts) -> tuple[str, ...]:
    """Situations a track fits: from its energy level where known, else from its tempo."""
    energy = facts.extra.get("energy")
    if energy is None:
        return tuple(facts.activities)
    return ACTIVITIES[energy]


def modality_phrases(facts: TrackFacts) -> dict[str, list[str]]:
    """{modality: phrases that describe the track's value of it}; modalities without words are left out. TC has no
    words of its own (co-listening): the tags stand in for it."""
    out: dict[str, list[str]] = {}
    bm = [x for x in (facts.artist, facts.title, facts.album) if x]
    if bm:
        out["BM"] = bm
    if facts.tags:
        out["ST"] = list(facts.tags)
        out["TC"] = list(facts.tags)
    moods = list(facts.extra.get("moods", ()))
    if moods:
        out["SC"] = moods
    mc = [x for x in (facts.tempo_word, f"{facts.tempo_bpm} bpm" if facts.tempo_bpm else None, facts.key_name) if x]
    if mc:
        out["MC"] = mc
    if facts.year:
        out["RI"] = [str(facts.year), facts.decade, facts.era]
    for m, text in (("AC", facts.artist_roles), ("SF", facts.song_facts), ("AB", facts.artist_bio)):
        if text:
            out[m] = [text]
    return out


def catalog_phrases(catalog: str | Path, run_dir: str | Path | None = None,
                    track_ids: Collection[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """{track_id: modality_phrases} for the catalog's tracks (only `track_ids` when given), moods from the run's
    audio-feature scale."""
    from data_gen.synth.track_facts import FACT_COLUMNS, track_facts

    audio = load_audio_scale(run_dir or Path(catalog).parent, catalog)
    return {r["track_id"]: modality_phrases(track_facts(r, audio=audio))
            for b in read_catalog(catalog, columns=[*FACT_COLUMNS, "audio_features"]) for r in b.to_pylist()
            if track_ids is None or r["track_id"] in track_ids}


def describe_short(facts: TrackFacts) -> str:
    """One line: 'Title by Artist (Album, 2019; pop, dance pop; energetic, danceable; upbeat, 124 bpm, A minor)'."""
    head = " by ".join(x for x in (facts.title, facts.artist) if x) or facts.track_id
    parts = [", ".join(x for x in (facts.album, str(facts.year) if facts.year else None) if x),
             ", ".join(facts.tags), ", ".join(facts.extra.get("moods", ())[:4]),
             ", ".join(x for x in (facts.tempo_word, f"{facts.tempo_bpm} bpm" if facts.tempo_bpm else None,
                                   facts.key_name) if x)]
    parts = [p for p in parts if p]
    return f"{head} ({'; '.join(parts)})" if parts else head
