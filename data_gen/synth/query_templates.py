"""Template query generator for D_qt: (TrackFacts, intent, seed) -> one request, deterministic, no LLM.

Used by `music3m-dqt --mode template` (or `--mode mix`). Same intents and facts as the LLM prompt; the phrasing is drawn
from the tables below, seeded by (seed, track, slot), and uses only fields the track has. Style `basic`: sentences
from genre, era, tempo and key; style `rich`: also short playlist-style names ("70s hard rock", "chill vibes") from
every tag (genre and subgenre), artist, year, the decade as people name it ("1980s", "1980's", "80s", "80's",
"eighties"), mood words of the audio features and activities. The opt-in intent `album` asks for the track's album by
its name; the opt-in intent `mention` names the artist, the song or a run of its title's words inside a longer
playlist name, among words of its own ("ARTIST live tour setlist", "TITLE - ARTIST", "80s rock (ARTIST)").
"""

from __future__ import annotations

import random
import string

from data_gen.synth.track_facts import TrackFacts, stable_hash
from data_gen.synth.words import activities

# `mention`: the artist, the song, or a run of the title's or album's words named inside a longer playlist name, among
# other words ({noise}: MENTION_WORDS or the track's year, decade, genre or mood), in any case. The same in both styles.
MENTION: tuple[str, ...] = (
    "{artist} {noise}", "{noise} {artist}", "{artist} {noise} {noise2}", "{noise} {artist} {noise2}",
    "{title}-{artist}", "{title} - {artist}", "{artist} - {title}", "{artist} radio - ({title})",
    "{genre} ({artist})", "{genre} | {artist}", "{artist} {year}", "{artist} - {album}",
    "{title_words}", "{title_words} {noise}", "{noise} {title_words}", "{album_words} {noise}")
# words playlists put around a name they mention
MENTION_WORDS: tuple[str, ...] = (
    "live", "tour", "setlist", "concert", "radio", "mix", "playlist", "collection", "anthology", "greatest hits",
    "top tracks", "favorites", "deluxe", "acoustic", "remixes", "party", "vibes", "essentials", "deep cuts",
    "complete", "discography", "mixtape", "covers", "tribute", "sessions", "classics", "the best", "all songs",
    "full album", "throwback", "forever", "only", "and more", "& friends", "🔥", "💯", "♫")

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
    "album": ("play the album {album}", "songs from {album}", "anything from {album}",
              "play {album} by {artist}"),
    "mention": MENTION,
}
_ING = {"relaxing": "relaxing", "falling asleep": "falling asleep", "reading": "reading", "studying": "studying",
        "cooking": "cooking", "a quiet evening": "winding down", "driving": "driving",
        "cleaning the house": "cleaning the house", "a road trip": "on a road trip", "a workout": "working out",
        "a party": "at a party", "getting ready to go out": "getting ready to go out", "running": "running",
        "the gym": "at the gym", "dancing all night": "dancing"}


# Rich style: names as people give playlists, and requests as they ask, from every field the catalog has.
RICH_PHRASINGS: dict[str, tuple[str, ...]] = {
    "artist": ("{artist}", "This Is {artist}", "best of {artist}", "{artist} essentials", "{artist} radio",
               "{artist} hits", "songs like {title}", "play {title} by {artist}", "{artist} and similar artists"),
    "genre": ("{genre}", "{genre} hits", "best {genre}", "{genre} mix", "{genre} playlist", "{genre} essentials",
              "{genre} classics", "new {genre}", "top {genre} songs", "play some {genre}", "{genre} & {genre2}",
              "{genre2} / {genre}"),
    "era": ("{decade} hits", "{year} hits", "hits of {year}", "{decade} {genre}", "{genre} {year}", "{era} {genre}",
            "best of the {decade}", "{decade} throwback", "{genre} {decade} classics", "top songs {year}"),
    "mood": ("{mood}", "{mood} songs", "{mood} {genre}", "{mood} vibes", "{mood} music", "something {mood}",
             "{mood} and {mood2}", "{mood} {decade}"),
    "activity": ("{activity}", "{activity} playlist", "{genre} for {activity}", "{activity} mix",
                 "music for {activity}", "{tempo_word} {activity} songs", "{mood} {activity}"),
    "combination": ("{mood} {genre} {decade}", "{decade} {genre} {activity}", "{genre} {year} {mood}",
                    "{artist} and more {genre}", "{decade} {mood} {genre}", "{tempo_word} {genre}",
                    "{genre} {activity} {year}", "{mood} {genre} like {artist}"),
    # the album's own words: compilations are named as playlists are ("80s 100 Hits", "MTV Unplugged")
    "album": ("{album}", "{album} album", "songs from {album}", "{album} tracks", "{artist} {album}",
              "{album} by {artist}"),
    "mention": MENTION,
}
STYLES = {"basic": PHRASINGS, "rich": RICH_PHRASINGS}


def _words_run(text: str | None, rng: random.Random) -> str | None:
    """A run of 1-4 consecutive words of `text` (2-4 when it has two or more), brackets dropped."""
    words = [w.strip("()[]") for w in (text or "").split()]
    words = [w for w in words if w]
    if not words:
        return None
    size = rng.randint(min(2, len(words)), min(4, len(words)))
    start = rng.randrange(len(words) - size + 1)
    return " ".join(words[start:start + size])


def _mention_slots(facts: TrackFacts, slots: dict[str, str], rng: random.Random) -> dict[str, str]:
    """The `mention` intent's extra slots: two different noise words, runs of the title's and album's words."""
    pool = list(MENTION_WORDS) + [slots[k] for k in ("year", "decade", "genre", "mood", "feel") if slots.get(k)]
    noise, noise2 = rng.sample(pool, 2)
    extra = {"noise": noise, "noise2": noise2, "title_words": _words_run(facts.title, rng),
             "album_words": _words_run(facts.album, rng)}
    return {**slots, **{k: v for k, v in extra.items() if v}}


def _rich_slots(facts: TrackFacts, rng: random.Random) -> dict[str, str]:
    slots = _slots(facts, rng)
    if facts.tags:
        tags = list(facts.tags)
        rng.shuffle(tags)
        slots["genre"] = tags[0]
        slots["genre2"] = tags[1] if len(tags) > 1 else None
    moods = list(facts.extra.get("moods", ())) or ([facts.feel] if facts.feel else [])
    if moods:
        rng.shuffle(moods)
        slots["mood"] = moods[0]
        slots["mood2"] = moods[1] if len(moods) > 1 else None
    acts = activities(facts)
    if acts:
        slots["activity"] = rng.choice(acts)
    return {k: v for k, v in slots.items() if v}


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


def template_query(facts: TrackFacts, intent: str, slot: int, seed: int, style: str = "basic") -> str:
    """-> one request for query `slot` of the track with the given intent (falls back to the title/artist)."""
    if style not in STYLES:
        raise ValueError(f"template style must be one of {sorted(STYLES)}, got {style!r}")
    rng = random.Random(stable_hash("template", seed, facts.track_id, slot))
    slots = _slots(facts, rng) if style == "basic" else _rich_slots(facts, rng)
    if style == "rich" and facts.decade_names:
        # the decade as playlists name it ("80s hits", "eighties throwback"), from a generator of its own so that
        # every other choice, and every request without a decade, stays what it was
        slots["decade"] = random.Random(stable_hash("decade", seed, facts.track_id, slot)).choice(facts.decade_names)
    if intent == "mention":  # from a generator of its own, so that the other intents stay what they were
        mention_rng = random.Random(stable_hash("mention", seed, facts.track_id, slot))
        slots = _mention_slots(facts, slots, mention_rng)
    usable = [p for p in STYLES[style][intent] if _fillable(p, slots)]
    if not usable:  # the intent was chosen from available_intents, so only very sparse records get here
        usable = [p for p in ("play {title} by {artist}", "play {title}", "play {artist}") if _fillable(p, slots)]
        usable = usable or ["play something new"]
    text = rng.choice(usable).format(**slots)
    if intent == "mention":  # playlist names come in every case ("HARD ROCK vibes", "post teen pop")
        text = {0: text.upper(), 1: text.lower()}.get(mention_rng.randrange(4), text)
    return text


def _fillable(phrasing: str, slots: dict[str, str]) -> bool:
    return all(name in slots for _, name, _, _ in string.Formatter().parse(phrasing) if name)
