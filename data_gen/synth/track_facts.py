"""A catalog record -> TrackFacts: its metadata in words (era, tempo, key, feel), the query intents it supports.

Both query generators (the LLM prompt and the templates in data_gen/synth/query_templates.py) read these facts, so
they describe a track the same way. Feel and activity words are heuristics from tempo and mode (the catalog has
no mood labels); they are hints for phrasing a request, not ground truth.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Catalog columns a TrackFacts is made from.
FACT_COLUMNS = ["track_id", "title", "artist", "album", "artist_roles", "tags", "tempo", "key", "mode",
                "release_date", "song_facts", "artist_bio"]
# Query intents (D_qt), in the order the generators cycle through them per query slot.
INTENTS: tuple[str, ...] = ("artist", "genre", "era", "mood", "activity", "combination")
# Intents used only when asked for (`music3m-dqt --intents album`), so the default D_qt stays as it was.
OPT_IN_INTENTS: tuple[str, ...] = ("album", "mention")
INTENT_HELP: dict[str, str] = {
    "artist": "names the artist (optionally the song or album)",
    "genre": "asks for a genre or style, without naming the artist",
    "era": "asks for music from a decade or period, optionally with a genre",
    "mood": "describes a feeling or atmosphere (happy, melancholic, calm, intense ...)",
    "activity": "describes a situation or activity the music is for (workout, studying, road trip ...)",
    "combination": "mixes two or more of the above (e.g. an era and a mood, or a genre and an activity)",
    "album": "names the album or compilation the track is on (its words, as a playlist name would use them)",
    "mention": "names the artist, the song or words of its title inside a longer playlist name, among other words "
               "(a tour, a year, a genre)",
}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# (upper BPM bound, tempo word, activities) -- a heuristic map from tempo to the situations people ask for.
TEMPO_WORDS = ((76, "slow", ("relaxing", "falling asleep", "reading")),
               (100, "laid-back", ("studying", "cooking", "a quiet evening")),
               (120, "mid-tempo", ("driving", "cleaning the house", "a road trip")),
               (140, "upbeat", ("a workout", "a party", "getting ready to go out")),
               (1000, "fast", ("running", "the gym", "dancing all night")))


@dataclass(frozen=True)
class TrackFacts:
    track_id: str
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    tags: tuple[str, ...] = ()
    year: int | None = None
    tempo_bpm: int | None = None
    key_name: str | None = None  # "A minor", "C# major", or "F" when the mode is unknown
    mode: int | None = None
    artist_roles: str | None = None
    song_facts: str | None = None
    artist_bio: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def decade(self) -> str | None:
        return f"{self.year // 10 * 10}s" if self.year else None

    @property
    def decade_names(self) -> tuple[str, ...]:
        """How people name the decade: '1980s', "1980's", and for 1950-1999 also '80s', "80's" and 'eighties'."""
        if not self.year:
            return ()
        start = self.year // 10 * 10
        if not 1950 <= start <= 1990:
            return self.decade, f"{start}'s"
        return (self.decade, f"{start}'s", f"{start % 100}s", f"{start % 100}'s",
                ("fifties", "sixties", "seventies", "eighties", "nineties")[(start - 1950) // 10])

    @property
    def era(self) -> str | None:
        """'late 1990s' style wording of the release year."""
        if not self.year:
            return None
        part = ("early", "early", "early", "early", "mid", "mid", "mid", "late", "late", "late")[self.year % 10]
        return f"{part} {self.decade}"

    @property
    def tempo_word(self) -> str | None:
        return None if self.tempo_bpm is None else next(w for hi, w, _ in TEMPO_WORDS if self.tempo_bpm < hi)

    @property
    def activities(self) -> tuple[str, ...]:
        return () if self.tempo_bpm is None else next(a for hi, _, a in TEMPO_WORDS if self.tempo_bpm < hi)

    @property
    def feel(self) -> str | None:
        """A mood word from tempo (energy) and mode (major bright / minor dark); None when both are unknown."""
        fast = None if self.tempo_bpm is None else self.tempo_bpm >= 110
        if fast is None and self.mode is None:
            return None
        table = {(True, 1): "happy and energetic", (True, 0): "intense and driving", (False, 1): "warm and mellow",
                 (False, 0): "moody and melancholic", (True, None): "energetic", (False, None): "calm",
                 (None, 1): "bright", (None, 0): "moody"}
        return table[(fast, self.mode)]

    def available_intents(self) -> tuple[str, ...]:
        """Intents this track's metadata can support, in INTENTS order (never empty), then the opt-in ones."""
        has = {"artist": bool(self.artist), "genre": bool(self.tags), "era": bool(self.year),
               "mood": self.feel is not None, "activity": self.tempo_bpm is not None}
        has["combination"] = sum(has.values()) >= 2
        opt_in = (("album",) if self.album else ()) + (("mention",) if self.artist or self.title else ())
        return (tuple(i for i in INTENTS if has[i]) or ("combination",)) + opt_in


def _clip(text: str | None, max_chars: int) -> str | None:
    if not text:
        return None
    return text if len(text) <= max_chars else text[: max_chars - 3].rsplit(" ", 1)[0] + "..."


def track_facts(record: dict, max_text_chars: int = 400, audio=None) -> TrackFacts:
    """A catalog.parquet row (dict) -> TrackFacts; long free texts are clipped to `max_text_chars`. With an
    `audio` scale (data_gen.synth.words.AudioScale) the record's audio features add mood words and an energy
    level to `extra`."""
    date = record.get("release_date") or ""
    year = int(date[:4]) if date[:4].isdigit() else None
    tempo = record.get("tempo")
    key, mode = record.get("key"), record.get("mode")
    key_name = None
    if key is not None and 0 <= int(key) < 12:
        key_name = PITCH_NAMES[int(key)] + {1: " major", 0: " minor"}.get(mode, "")
    return TrackFacts(
        track_id=str(record["track_id"]), title=record.get("title"), artist=record.get("artist"),
        album=record.get("album"), tags=tuple(record.get("tags") or ()), year=year,
        tempo_bpm=None if tempo is None else int(round(tempo)), key_name=key_name,
        mode=None if mode is None else int(mode),
        artist_roles=_clip(record.get("artist_roles"), max_text_chars),
        song_facts=_clip(record.get("song_facts"), max_text_chars),
        artist_bio=_clip(record.get("artist_bio"), max_text_chars),
        extra=_audio_extra(record.get("audio_features"), audio))


def _audio_extra(vector, audio) -> dict:
    if audio is None or vector is None:
        return {}
    extra = {"moods": audio.words(vector)}
    energy = audio.level(vector, "energy")
    if energy is not None:
        extra["energy"] = energy
    return extra


def describe(facts: TrackFacts) -> str:
    """TrackFacts -> a '- field: value' list for a prompt (missing fields are left out)."""
    rows = [("title", facts.title), ("artist", facts.artist), ("album", facts.album),
            ("tags", ", ".join(facts.tags) or None),
            ("released", f"{facts.year} ({facts.era})" if facts.year else None),
            ("tempo", f"{facts.tempo_bpm} BPM ({facts.tempo_word})" if facts.tempo_bpm is not None else None),
            ("key", facts.key_name), ("feel (estimated from tempo and key)", facts.feel),
            ("fits activities like", ", ".join(facts.activities) or None),
            ("artist roles and collaborations", facts.artist_roles), ("song facts", facts.song_facts),
            ("artist biography", facts.artist_bio)]
    return "\n".join(f"- {name}: {value}" for name, value in rows if value)


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same in every process and on every machine (unlike hash())."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def intent_for(facts: TrackFacts, slot: int, seed: int, allowed: tuple[str, ...] | None = None) -> str | None:
    """Intent of query `slot` of a track: cycle INTENTS from a per-track start, skipping unsupported intents.
    With `allowed`, only those intents are cycled (opt-in ones such as album after INTENTS); None when the track
    supports none of them."""
    start = stable_hash("intent", seed, facts.track_id) % len(INTENTS)
    ok = facts.available_intents()
    ok = tuple(i for i in ok if i in (INTENTS if allowed is None else allowed))
    if not ok:
        return None
    order = INTENTS + tuple(i for i in OPT_IN_INTENTS if i in ok)
    for step in range(len(order)):
        intent = order[(start + slot + step) % len(order)]
        if intent in ok:
            return intent
    return ok[0]
