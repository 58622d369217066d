"""Template query generator for D_qt: (TrackFacts, intent, seed) -> one request, deterministic, no LLM.

A documented alternative to LLM-written queries (`python -m data_gen.dqt --mode template`) and a mixing option
(`--mode mix --template_share 0.3`). It covers the same intents as the LLM prompt (track_facts.INTENTS) and reads
the same facts; the phrasing is drawn from the tables below with a generator seeded by (seed, track, slot), so
the same inputs give the same query on every machine. Every phrasing uses only fields the track has.
"""

from __future__ import annotations

import random
import string

from data_gen.track_facts import TrackFacts, stable_hash

# Phrasings per intent; {placeholders} are filled from _slots(). A phrasing is usable only when all of its
# placeholders are known for the track.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "artist": ("play something by {artist}", "I want to hear {artist}", "put on {title} by {artist}",
               "play {artist}'s {title}", "some {artist} songs please", "anything from {album} by {artist}"),
    "genre": ("play some {genre}", "I'm in the mood for {genre}", "give me {genre} tracks",
              "{genre} music please", "recommend some good {genre}"),
    "era": ("music from the {decade}", "{decade} {genre} hits", "play songs from the {era}",
            "throwback to the {decade}", "{genre} from around {year}"),
    "mood": ("something {feel}", "play {feel} music", "I need {feel} songs right now", "{feel} {genre} tracks"),
    "activity": ("music for {activity}", "{tempo_word} songs for {activity}", "a playlist for {activity}",
                 "{genre} for {activity}", "what should I listen to while {activity_ing}"),
    "combination": ("{feel} {genre} from the {decade}", "{decade} {genre} for {activity}",
                    "{tempo_word} {genre} like {artist}", "{feel} songs by {artist}",
                    "{genre} from the {era} that feels {feel}", "{decade} music for {activity}"),
}
_ING = {"relaxing": "relaxing", "falling asleep": "falling asleep", "reading": "reading", "studying": "studying",
        "cooking": "cooking", "a quiet evening": "winding down", "driving": "driving",
        "cleaning the house": "cleaning the house", "a road trip": "on a road trip", "a workout": "working out",
        "a party": "at a party", "getting ready to go out": "getting ready to go out", "running": "running",
        "the gym": "at the gym", "dancing all night": "dancing"}


def _slots(facts: TrackFacts, rng: random.Random) -> dict[str, str]:
    """The fillable placeholders of a track (only known ones)."""
    slots = {"artist": facts.artist, "title": facts.title, "album": facts.album,
             "genre": rng.choice(facts.tags[:2]) if facts.tags else None,  # the first tags name the genre
             "decade": facts.decade, "era": facts.era,
             "year": str(facts.year) if facts.year else None, "feel": facts.feel, "tempo_word": facts.tempo_word}
    if facts.activities:
        slots["activity"] = rng.choice(facts.activities)
        slots["activity_ing"] = _ING.get(slots["activity"], slots["activity"])
    return {k: v for k, v in slots.items() if v}


def template_query(facts: TrackFacts, intent: str, slot: int, seed: int) -> str:
    """-> one request for query `slot` of the track with the given intent (falls back to the title/artist)."""
    rng = random.Random(stable_hash("template", seed, facts.track_id, slot))
    slots = _slots(facts, rng)
    usable = [p for p in PHRASINGS[intent] if _fillable(p, slots)]
    if not usable:  # the intent was chosen from available_intents, so only very sparse records get here
        usable = [p for p in ("play {title} by {artist}", "play {title}", "play {artist}") if _fillable(p, slots)]
        usable = usable or ["play something new"]
    return rng.choice(usable).format(**slots)


def _fillable(phrasing: str, slots: dict[str, str]) -> bool:
    return all(name in slots for _, name, _, _ in string.Formatter().parse(phrasing) if name)
