"""Synthetic demo catalog: (num_tracks, seed) -> raw catalog records for all nine modalities + themed playlists.

No data files, no network. Genres, artists, albums and playlist themes give it structure a model can learn, and each
modality is missing for a different share of tracks. The same (num_tracks, seed) always gives the same output.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from data_gen.catalog.playlists import Playlist

DEFAULT_NUM_TRACKS = 3000
YEAR_MIN, YEAR_MAX = 1950, 2024

# Spotify's audio-feature order and value ranges; loudness in dB, duration in minutes.
AUDIO_FEATURES = ("danceability", "energy", "loudness", "speechiness", "acousticness", "instrumentalness",
                  "liveness", "valence", "duration_min")
FEATURE_SPREAD = (0.09, 0.09, 2.0, 0.03, 0.10, 0.10, 0.06, 0.12, 0.7)  # within-genre noise per feature
FEATURE_RANGE = ((0, 1), (0, 1), (-35.0, -1.0), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1), (1.0, 15.0))
FI = {name: i for i, name in enumerate(AUDIO_FEATURES)}

# Share of tracks whose modality fields are missing (AB is decided per artist: artists without a biography).
MISSING = {"AC": 0.10, "BM": 0.005, "ST": 0.05, "SC": 0.05, "MC": 0.03, "RI": 0.04, "SF": 0.25, "AB": 0.08}
KEY_ONLY_MISSING = 0.02  # tempo detected but key undetermined
ALBUM_MISSING = 0.03  # loose singles
FEATURED_SHARE = 0.12
LIVE_SHARE = 0.05
CROSSOVER_SHARE = 0.10  # tracks outside the artist's home genre

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class Genre:
    """One genre: label, how it sounds, when it was made, who makes it, and words that flavour its titles."""

    name: str  # label and tag
    display: str  # as written in playlist names
    subgenres: tuple[tuple[str, float], ...]  # (subgenre, tempo shift in BPM)
    tempo: tuple[float, float]  # mean, sd
    major: float  # P(major mode)
    keys: tuple[int, ...]  # favoured pitch classes
    sound: tuple[float, ...]  # audio-feature centroid, AUDIO_FEATURES order
    moods: tuple[str, ...]
    activities: tuple[str, ...]
    era: tuple[int, int, int]  # mean year, sd, earliest year
    related: tuple[str, ...]
    band_share: float
    roles: tuple[str, ...]  # instruments / roles in credits
    solo_role: str  # what a solo artist is called in a biography
    origins: tuple[tuple[str, str], ...]
    words: tuple[str, ...]  # title nouns with a genre flavour


GENRES: tuple[Genre, ...] = (
    Genre("rock", "Rock",
          (("alternative rock", 0), ("indie rock", 4), ("classic rock", -4), ("hard rock", 6), ("garage rock", 10),
           ("post-punk", 14)),
          (122, 16), 0.62, (4, 9, 2, 7), (0.50, 0.76, -7.0, 0.05, 0.12, 0.08, 0.20, 0.50, 4.1),
          ("energetic", "nostalgic", "melancholic", "uplifting", "aggressive"),
          ("driving", "workout", "party", "running"), (1984, 14, 1955), ("metal", "folk", "pop", "country"),
          0.70, ("lead vocals", "lead guitar", "rhythm guitar", "bass", "drums", "keyboards"),
          "singer and guitarist",
          (("Seattle", "United States"), ("Manchester", "United Kingdom"), ("London", "United Kingdom"),
           ("Chicago", "United States"), ("Melbourne", "Australia"), ("Dublin", "Ireland"),
           ("Toronto", "Canada")),
          ("Highway", "Stone", "Revolution", "Amplifier", "Garage", "Rebel", "Wheels", "Jukebox")),
    Genre("pop", "Pop",
          (("synth-pop", 4), ("dance pop", 8), ("indie pop", 0), ("electropop", 6), ("teen pop", 2),
           ("art pop", -6)),
          (116, 14), 0.70, (0, 7, 2, 9), (0.68, 0.68, -6.0, 0.07, 0.18, 0.02, 0.15, 0.60, 3.4),
          ("happy", "romantic", "uplifting", "party", "melancholic"),
          ("party", "running", "cooking", "commute"), (2004, 12, 1960), ("r&b", "edm", "rock", "latin"),
          0.25, ("vocals", "synthesizers", "guitar", "backing vocals", "programming"), "singer-songwriter",
          (("Los Angeles", "United States"), ("Stockholm", "Sweden"), ("London", "United Kingdom"),
           ("Toronto", "Canada"), ("Sydney", "Australia"), ("Auckland", "New Zealand")),
          ("Heartbeat", "Neon", "Crush", "Radio", "Mirror", "Sugar", "Glitter", "Satellite")),
    Genre("hip hop", "Hip Hop",
          (("boom bap", 0), ("trap", 46), ("conscious hip hop", -2), ("west coast rap", -4), ("lo-fi hip hop", -12),
           ("drill", 48)),
          (92, 7), 0.40, (1, 5, 7, 11), (0.77, 0.63, -6.5, 0.28, 0.12, 0.01, 0.18, 0.47, 3.6),
          ("aggressive", "groovy", "party", "dark", "chill"),
          ("workout", "party", "driving", "gaming", "study"), (2008, 9, 1979), ("r&b", "pop", "edm"),
          0.15, ("rap vocals", "production", "turntables", "hook vocals"), "rapper",
          (("New York", "United States"), ("Atlanta", "United States"), ("Los Angeles", "United States"),
           ("Houston", "United States"), ("London", "United Kingdom"), ("Toronto", "Canada")),
          ("Hustle", "Crown", "Block", "Paper", "Flow", "Cipher", "Corner", "Legacy")),
    Genre("edm", "EDM",
          (("house", 0), ("techno", 6), ("trance", 12), ("dubstep", 14), ("drum and bass", 46), ("future bass", 24)),
          (126, 3), 0.35, (5, 9, 7, 1), (0.70, 0.86, -5.0, 0.06, 0.03, 0.62, 0.17, 0.42, 5.2),
          ("energetic", "party", "uplifting", "dreamy", "dark"),
          ("workout", "party", "running", "gaming"), (2013, 6, 1988), ("pop", "hip hop", "ambient"),
          0.25, ("synthesizers", "programming", "production", "drum machine"), "DJ and producer",
          (("Berlin", "Germany"), ("Amsterdam", "Netherlands"), ("Detroit", "United States"),
           ("Ibiza", "Spain"), ("Stockholm", "Sweden"), ("Chicago", "United States")),
          ("Pulse", "Circuit", "Laser", "Bassline", "Frequency", "Strobe", "Signal", "Voltage")),
    Genre("jazz", "Jazz",
          (("bebop", 30), ("cool jazz", -10), ("smooth jazz", -18), ("jazz fusion", 10), ("swing", 24),
           ("hard bop", 20)),
          (118, 28), 0.60, (5, 10, 3, 0), (0.55, 0.38, -12.0, 0.05, 0.70, 0.55, 0.22, 0.52, 5.6),
          ("chill", "romantic", "groovy", "melancholic", "nostalgic"),
          ("dinner", "study", "reading", "cooking"), (1966, 13, 1950), ("r&b", "classical", "latin"),
          0.45, ("saxophone", "trumpet", "piano", "double bass", "drums", "vibraphone"), "saxophonist",
          (("New Orleans", "United States"), ("New York", "United States"), ("Chicago", "United States"),
           ("Kansas City", "United States"), ("Paris", "France"), ("Copenhagen", "Denmark")),
          ("Blue Note", "Nightcap", "Bourbon", "Lounge", "Smoke", "Avenue", "Cadillac", "Skyline")),
    Genre("classical", "Classical",
          (("baroque", 0), ("chamber music", -6), ("symphony", 6), ("opera", -10), ("contemporary classical", -14),
           ("solo piano", -18)),
          (96, 24), 0.60, (0, 2, 7, 5), (0.28, 0.18, -20.0, 0.04, 0.92, 0.88, 0.12, 0.27, 7.5),
          ("peaceful", "melancholic", "dreamy", "uplifting", "romantic"),
          ("study", "sleep", "reading", "meditation", "dinner"), (1988, 20, 1950), ("jazz", "ambient"),
          0.50, ("piano", "violin", "viola", "cello", "conductor", "oboe"), "pianist",
          (("Vienna", "Austria"), ("Leipzig", "Germany"), ("Prague", "Czech Republic"),
           ("St. Petersburg", "Russia"), ("Boston", "United States"), ("Milan", "Italy")),
          ("Sonata", "Concerto", "Nocturne", "Prelude", "Etude", "Symphony", "Suite", "Fugue", "Waltz")),
    Genre("country", "Country",
          (("outlaw country", 0), ("country pop", 8), ("bluegrass", 24), ("honky tonk", 10), ("americana", -6)),
          (112, 14), 0.85, (7, 2, 9, 4, 0), (0.60, 0.62, -7.0, 0.04, 0.32, 0.01, 0.18, 0.63, 3.4),
          ("nostalgic", "happy", "romantic", "melancholic"),
          ("driving", "cooking", "party", "commute"), (1992, 16, 1950), ("folk", "rock", "pop"),
          0.20, ("vocals", "acoustic guitar", "pedal steel", "fiddle", "banjo"), "singer",
          (("Nashville", "United States"), ("Austin", "United States"), ("Bakersfield", "United States"),
           ("Tulsa", "United States"), ("Lubbock", "United States"), ("Calgary", "Canada")),
          ("Whiskey", "Dirt Road", "Pickup", "Porch", "Rodeo", "County Line", "Boots", "Harvest Moon")),
    Genre("metal", "Metal",
          (("heavy metal", 0), ("thrash metal", 36), ("death metal", 30), ("doom metal", -40), ("power metal", 28),
           ("metalcore", 14)),
          (130, 14), 0.25, (4, 2, 1, 9), (0.40, 0.93, -4.5, 0.08, 0.01, 0.18, 0.22, 0.28, 5.0),
          ("aggressive", "dark", "energetic"),
          ("workout", "gaming", "running", "driving"), (1996, 11, 1970), ("rock",),
          0.85, ("vocals", "lead guitar", "rhythm guitar", "bass", "drums"), "vocalist",
          (("Birmingham", "United Kingdom"), ("Oslo", "Norway"), ("Helsinki", "Finland"),
           ("Gothenburg", "Sweden"), ("Tampa", "United States"), ("San Francisco", "United States")),
          ("Inferno", "Throne", "Serpent", "Steel", "Doom", "Pyre", "Legion", "Obsidian")),
    Genre("r&b", "R&B",
          (("neo soul", 0), ("contemporary r&b", 4), ("soul", 12), ("funk", 22), ("quiet storm", -14)),
          (96, 12), 0.50, (3, 8, 10, 6), (0.68, 0.52, -7.5, 0.10, 0.25, 0.03, 0.14, 0.55, 3.9),
          ("romantic", "groovy", "chill", "melancholic"),
          ("dinner", "party", "commute", "cooking"), (1994, 15, 1955), ("hip hop", "pop", "jazz"),
          0.25, ("lead vocals", "backing vocals", "keys", "bass", "horns"), "singer",
          (("Detroit", "United States"), ("Memphis", "United States"), ("Philadelphia", "United States"),
           ("Atlanta", "United States"), ("Los Angeles", "United States"), ("London", "United Kingdom")),
          ("Velvet", "Silk", "Satin", "Lover", "Touch", "Slow Dance", "Honey", "After Hours")),
    Genre("folk", "Folk",
          (("indie folk", 0), ("singer-songwriter", -6), ("traditional folk", 6), ("folk rock", 14),
           ("celtic folk", 20)),
          (104, 16), 0.65, (7, 2, 0, 9), (0.50, 0.35, -11.0, 0.04, 0.80, 0.10, 0.13, 0.45, 3.8),
          ("nostalgic", "melancholic", "peaceful", "happy"),
          ("reading", "cooking", "study", "commute"), (1978, 18, 1950), ("country", "rock", "classical"),
          0.35, ("vocals", "acoustic guitar", "fiddle", "banjo", "mandolin", "harmonium"), "singer-songwriter",
          (("Dublin", "Ireland"), ("Glasgow", "United Kingdom"), ("Portland", "United States"),
           ("Asheville", "United States"), ("Vancouver", "Canada"), ("Bergen", "Norway")),
          ("Willow", "Lantern", "Cabin", "Ballad", "Orchard", "Sparrow", "Hillside", "Ferry")),
    Genre("latin", "Latin",
          (("reggaeton", -4), ("salsa", 70), ("bachata", 28), ("latin pop", 14), ("bossa nova", 36),
           ("cumbia", 4)),
          (96, 8), 0.55, (9, 0, 2, 5), (0.76, 0.74, -5.5, 0.08, 0.22, 0.02, 0.18, 0.72, 3.5),
          ("party", "romantic", "happy", "groovy"),
          ("party", "dinner", "workout", "cooking"), (2006, 12, 1955), ("pop", "jazz", "hip hop"),
          0.20, ("vocals", "percussion", "guitar", "piano", "trumpet", "congas"), "singer",
          (("San Juan", "Puerto Rico"), ("Medellín", "Colombia"), ("Havana", "Cuba"), ("Mexico City", "Mexico"),
           ("Santo Domingo", "Dominican Republic"), ("Rio de Janeiro", "Brazil"), ("Buenos Aires", "Argentina")),
          ("Corazón", "Fiesta", "Noche", "Playa", "Amor", "Calor", "Ritmo", "Luna")),
    Genre("ambient", "Ambient",
          (("dark ambient", -6), ("drone", -10), ("new age", 0), ("space ambient", 4), ("downtempo", 18)),
          (78, 12), 0.50, tuple(range(12)), (0.25, 0.15, -21.0, 0.04, 0.70, 0.90, 0.10, 0.16, 6.5),
          ("dreamy", "peaceful", "dark", "chill"),
          ("sleep", "meditation", "study", "reading"), (2002, 11, 1975), ("classical", "edm"),
          0.30, ("synthesizers", "field recordings", "piano", "electronics", "tape loops"),
          "composer and sound artist",
          (("Reykjavik", "Iceland"), ("Tokyo", "Japan"), ("Berlin", "Germany"), ("Brighton", "United Kingdom"),
           ("Montreal", "Canada"), ("Kyoto", "Japan")),
          ("Drift", "Particle", "Void", "Tide", "Horizon", "Static", "Nebula", "Glacier")),
)
GENRE_BY_NAME = {g.name: g for g in GENRES}


@dataclass(frozen=True)
class Mood:
    """A mood: title words, how it pushes the sound and tempo, and the activities it suits."""

    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    shift: dict[str, float]  # audio-feature deltas
    tempo: float  # BPM delta
    major: float  # delta of P(major)
    activities: tuple[str, ...]


MOODS: dict[str, Mood] = {
    "happy": Mood(("Sunny", "Golden", "Bright", "Lucky", "Sweet"),
                  ("Sunshine", "Summer", "Smile", "Daydream", "Parade"),
                  {"valence": 0.20, "energy": 0.05, "danceability": 0.05}, 6, 0.20,
                  ("party", "cooking", "driving", "running", "commute")),
    "melancholic": Mood(("Grey", "Lonely", "Broken", "Fading", "Cold"),
                        ("Rain", "Tears", "Ghosts", "Goodbye", "Winter"),
                        {"valence": -0.22, "energy": -0.12}, -10, -0.30,
                        ("reading", "study", "commute", "sleep")),
    "energetic": Mood(("Electric", "Wild", "Rapid", "Burning", "Restless"),
                      ("Fire", "Thunder", "Rush", "Engine", "Lightning"),
                      {"energy": 0.12, "danceability": 0.04}, 10, 0.05,
                      ("workout", "running", "driving", "party", "gaming")),
    "chill": Mood(("Slow", "Easy", "Mellow", "Lazy", "Soft"),
                  ("Breeze", "Sunday", "Haze", "Tides", "Hammock"),
                  {"energy": -0.18, "acousticness": 0.08}, -12, 0.0,
                  ("study", "reading", "cooking", "dinner", "commute")),
    "romantic": Mood(("Tender", "Velvet", "Secret", "Warm", "Only"),
                     ("Kiss", "Heart", "Candlelight", "Rose", "Promise"),
                     {"valence": 0.06, "energy": -0.10, "acousticness": 0.08}, -8, 0.10,
                     ("dinner", "cooking", "sleep")),
    "dark": Mood(("Black", "Hollow", "Cursed", "Silent", "Crimson"),
                 ("Shadow", "Abyss", "Raven", "Midnight", "Grave"),
                 {"valence": -0.20, "energy": 0.03}, 0, -0.35,
                 ("gaming", "workout", "driving", "meditation")),
    "aggressive": Mood(("Savage", "Iron", "Brutal", "Raging", "Feral"),
                       ("War", "Fist", "Blade", "Riot", "Hammer"),
                       {"energy": 0.12, "loudness": 1.5, "valence": -0.10}, 8, -0.20,
                       ("workout", "running", "gaming")),
    "dreamy": Mood(("Floating", "Distant", "Hazy", "Crystal", "Silver"),
                   ("Clouds", "Dream", "Mirage", "Stars", "Aurora"),
                   {"energy": -0.12, "instrumentalness": 0.08}, -6, 0.0,
                   ("sleep", "meditation", "study", "reading")),
    "uplifting": Mood(("Rising", "High", "Endless", "Brave", "Shining"),
                      ("Sky", "Anthem", "Horizon", "Light", "Wings"),
                      {"valence": 0.15, "energy": 0.08}, 4, 0.25,
                      ("running", "workout", "driving", "commute")),
    "nostalgic": Mood(("Old", "Faded", "Yesterday's", "Paper", "Sepia"),
                      ("Memories", "Photograph", "Hometown", "Letters", "Summers"),
                      {"valence": -0.04, "acousticness": 0.10}, -4, 0.05,
                      ("driving", "reading", "commute", "cooking")),
    "peaceful": Mood(("Still", "Quiet", "Gentle", "Calm", "Pale"),
                     ("Meadow", "River", "Morning", "Lake", "Snowfall"),
                     {"energy": -0.20, "acousticness": 0.12}, -12, 0.15,
                     ("sleep", "meditation", "study", "reading")),
    "groovy": Mood(("Funky", "Smooth", "Slick", "Loose", "Sly"),
                   ("Groove", "Boogie", "Motion", "Strut", "Shuffle"),
                   {"danceability": 0.12, "valence": 0.06}, 2, 0.0,
                   ("party", "cooking", "dinner", "driving")),
    "party": Mood(("Crazy", "Loud", "All-Night", "Hot", "Bouncy"),
                  ("Party", "Weekend", "Club", "Dancefloor", "Friday"),
                  {"danceability": 0.10, "energy": 0.10, "valence": 0.10}, 6, 0.10,
                  ("party", "workout", "gaming")),
}

# Activity tag -> (word in playlist names, playlist-name endings).
ACTIVITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "workout": ("Workout", ("Power", "Pump", "Beast Mode", "Fuel")),
    "running": ("Running", ("Pace", "Miles", "Stride")),
    "driving": ("Driving", ("Cruise", "Highway Miles", "Night Drive")),
    "party": ("Party", ("Bangers", "Starters", "All Night")),
    "study": ("Study", ("Focus", "Deep Work", "Concentration")),
    "reading": ("Reading", ("Nook", "Pages", "Corner")),
    "sleep": ("Sleep", ("Drift", "Lullabies", "Wind Down")),
    "meditation": ("Meditation", ("Calm", "Breath", "Stillness")),
    "cooking": ("Cooking", ("Kitchen Jams", "Stir & Simmer", "Mix")),
    "dinner": ("Dinner", ("Party", "Table", "by Candlelight")),
    "commute": ("Commute", ("Morning Ride", "Train Window", "Mix")),
    "gaming": ("Gaming", ("Boss Fight", "Grind", "Session")),
}

# Invented name parts: combinations of syllables, so generated artists do not name real ones.
SYLLABLES = ("ka", "vel", "mor", "ra", "zen", "tor", "li", "an", "dro", "sel", "vi", "nek", "ol", "ma", "ry", "qua",
             "bel", "sto", "fi", "gan", "lu", "ber", "ti", "sa", "rem", "cor", "ish", "val", "no", "da")
SURNAME_ENDINGS = ("", "", "son", "ez", "ini", "ova", "berg", "ley", "ton", "ard", "ski")
FIRST_NAMES = {
    "male": ("Tomas", "Elias", "Marco", "Dario", "Felix", "Jonah", "Rafael", "Idris", "Caleb", "Mateo", "Soren",
             "Amos", "Lionel", "Otto", "Kofi", "Hugo"),
    "female": ("Lena", "Mira", "Ines", "Clara", "Nadia", "Ruby", "Talia", "Elsa", "Marisol", "Ada", "Noor", "Greta",
               "Odette", "Yara", "Hazel", "Lucia"),
    "non-binary": ("Robin", "Sasha", "Quinn", "Rowan", "Ash", "Jules"),
}
BAND_ADJECTIVES = ("Velvet", "Paper", "Silver", "Electric", "Hollow", "Midnight", "Golden", "Northern", "Broken",
                   "Crystal", "Static", "Wandering")
BAND_NOUNS = ("Lanterns", "Wolves", "Satellites", "Ravens", "Engines", "Tides", "Arrows", "Orchids", "Comets",
              "Harbors", "Foxes", "Mirrors", "Pilots", "Sparks", "Kites")
METAL_WORDS = ("Grave", "Iron", "Blood", "Storm", "Night", "Bone", "Ash", "Wolf", "Hex", "Crypt", "Thorn", "Rust")
ENSEMBLE_TYPES = {"classical": ("String Quartet", "Chamber Ensemble", "Baroque Players", "Piano Trio"),
                  "jazz": ("Trio", "Quartet", "Quintet")}
BAND_WORDS = {"jazz": "ensemble", "classical": "ensemble", "hip hop": "crew", "edm": "duo", "ambient": "project"}
STAGE_PREFIXES = {"hip hop": ("Lil", "Young", "MC", "Big", "King"), "edm": ("DJ",)}
STUDIO_NOUNS = ("Lighthouse", "Boathouse", "Chapel", "Warehouse", "Greenhouse", "Attic", "Mill", "Observatory")
VENUE_NOUNS = ("Theatre", "Hall", "Ballroom", "Pavilion", "Roundhouse", "Playhouse")
NOT_INSTRUMENTS = ("vocal", "production", "programming", "conductor")
ORDINALS = ("first", "second", "third", "fourth")
AWARDS = ("a national music award", "a critics' prize", "a best newcomer award", "a lifetime achievement award")

# Song facts: generic sentences plus sentences only a genre's tracks get (str.format fields filled per track).
FACTS = (
    "Recorded at {studio} in {city} over {days} days in {year}.",
    "Produced by {producer}, who also played {instrument} on the track.",
    "Peaked at No. {chart} on the {genre_display} airplay chart.",
    "The {instrument} part was recorded in one overnight session.",
    "Written in a single afternoon after {artist} {event}.",
    "Found a second life on streaming playlists around {later_year}.",
    "Mixed to analogue tape at {studio}; the final master runs {minutes} minutes.",
)
ALBUM_FACT = "Released in {year} as the {ordinal} single from {album}."
LIVE_FACT = "Recorded live at {venue} in {city} in {year}."
FACT_EVENTS = ("came back from a long tour", "moved to a new city", "a year away from music", "a breakup",
               "the birth of a child")
GENRE_FACTS = {
    "rock": ("The guitars were recorded through a borrowed amplifier in a {city} basement.",
             "The band tracked the song live in the room before adding vocals."),
    "pop": ("Co-written by a team of {n} songwriters in {city}.",
            "The chorus was rewritten three times before release."),
    "hip hop": ("The beat is built around a chopped sample of an old {other_genre} record.",
                "The verses were written and recorded in one night."),
    "edm": ("Premiered in a club set in {city} months before its release.",
            "The lead synth was programmed on a vintage analogue synthesizer."),
    "jazz": ("Cut live in the studio in two takes, with no overdubs.",
             "The {instrument} solo was improvised on the first take."),
    "classical": ("Performed with the {city} Chamber Orchestra, conducted by {producer}.",
                  "Recorded in a concert hall in {city} with a single stereo pair of microphones."),
    "country": ("Written on a porch outside {city}.", "Features pedal steel by a {city} session player."),
    "metal": ("The guitars were tuned down a whole step for a heavier sound.",
              "The drums were tracked without a click track."),
    "r&b": ("The horn section was recorded in a single take.", "The vocal harmonies were stacked over {n} tracks."),
    "folk": ("Recorded in a cabin outside {city} on a single microphone.",
             "Based on a traditional tune the artist learned as a child."),
    "latin": ("Sung in Spanish.", "The percussion was recorded with a {n}-piece ensemble in {city}."),
    "ambient": ("Built from field recordings made near {city}.",
                "Composed for a gallery installation in {city}."),
}

# Playlist naming: {mood}/{genre}/{decade}/{activity}/{artist} are filled per playlist.
GENRE_MOOD_NAMES = ("{mood} {genre} Evenings", "{mood} {genre} Vibes", "{mood} {genre} Mix",
                    "{mood} {genre} Nights", "{mood} {genre} Mornings", "{genre} for {mood} Days",
                    "{mood} {genre} Essentials", "{mood} {genre} Hour")
ERA_NAMES = ("{decade} {genre} Road Trip", "{decade} {genre} Classics", "{decade} {genre} Throwback",
             "{decade} {genre} Hits", "{genre} of the {decade}", "{decade} {genre} Rewind", "{decade} {genre} Gold")
ACTIVITY_NAMES = ("{activity} {genre} {ending}", "{genre} {activity} {ending}", "{activity}: {genre}")
ARTIST_PLAYLIST_NAMES = ("This Is {artist}", "{artist} Essentials", "Best of {artist}")
FALLBACK_NAMES = ("{genre} Essentials", "All About {genre}")


# Tempo / energy playlists: names, and the test every on-theme track passes.
FEATURE_THEMES: tuple[tuple[tuple[str, ...], Callable[[_Track], bool]], ...] = (
    (("Slow Acoustic Sunday", "Slow & Acoustic", "Acoustic Slow Burners"),
     lambda t: t.tempo < 100 and t.f("acousticness") > 0.55),
    (("High Energy Cardio", "Maximum Energy", "Fast Lane Energy"),
     lambda t: t.tempo >= 120 and t.f("energy") > 0.8),
    (("Feel-Good Grooves", "Upbeat & Happy", "Good Mood Mix"),
     lambda t: t.f("valence") > 0.65 and t.f("danceability") > 0.6),
    (("Low-Key Late Night", "Quiet Hours", "Soft & Low"), lambda t: t.f("energy") < 0.3),
    (("Minor Key Moods", "Shades of Minor", "In a Minor Key"), lambda t: t.mode == 0 and t.f("valence") < 0.35),
    (("Dance Floor Fillers", "Made to Move", "Danceable Mix"), lambda t: t.f("danceability") > 0.75),
    (("Instrumental Focus", "No Words Needed", "Instrumentals Only"), lambda t: t.f("instrumentalness") > 0.7),
    (("Fast & Loud", "Turn It Up", "Full Volume"), lambda t: t.tempo > 140 and t.f("loudness") > -7),
    (("Sunday Morning Coffee", "Easy Like Sunday", "Gentle Start"),
     lambda t: t.f("energy") < 0.5 and t.f("valence") > 0.5 and t.f("acousticness") > 0.5),
)
PLAYLIST_KINDS = {"genre_mood": 0.30, "era_genre": 0.22, "activity": 0.22, "artist": 0.12, "feature": 0.14}
PLAYLIST_SIZE = (15, 60)
NOISE_SHARE = (0.05, 0.20)
MIN_THEME = 12  # smaller themes cannot fill a playlist without too much noise
TRACKS_PER_ARTIST = 10
TRACKS_PER_PLAYLIST = 15


@dataclass
class _Track:
    """Ground truth of one track; its record shows this with some fields dropped. Playlists use the truth."""

    idx: int
    artist: _Artist
    genre: Genre
    subgenre: str
    mood: str
    activity: str | None
    year: int
    album: _Album
    tempo: float = 0.0
    key: int = 0
    mode: int = 1
    features: tuple[float, ...] = ()
    live: bool = False
    featured: _Artist | None = None
    popularity: float = 1.0
    title: str = ""
    date: str = ""
    track_id: str = ""

    def f(self, name: str) -> float:
        return self.features[FI[name]]


@dataclass
class _Album:
    name: str
    year: int
    mood: str


@dataclass
class _Artist:
    idx: int
    name: str
    genre: Genre
    subgenre: str
    is_band: bool
    gender: str | None
    origin: tuple[str, str]
    start: int
    end: int
    born: int  # birth year, or formation year of a band
    members: list[tuple[str, str]]  # (name, role) of band members, or of the solo artist's session players
    own_roles: str  # what a solo artist plays
    producers: list[str]
    studio: str
    has_bio: bool
    tempo_offset: float
    sound_offset: tuple[float, ...]
    popularity: float
    albums: list[_Album] = field(default_factory=list)
    tracks: list[_Track] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# Names and texts
# ----------------------------------------------------------------------------------------------------------------

def _invented(rng: random.Random, syllables: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def _person(rng: random.Random, gender: str | None = None) -> str:
    gender = gender or rng.choice(("male", "female"))
    return f"{rng.choice(FIRST_NAMES[gender])} {_invented(rng, rng.choice((2, 2, 3)))}{rng.choice(SURNAME_ENDINGS)}"


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0].lower() in 'aeiou' else 'a'} {phrase}"


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "sh", "ch")) else "s")


def _band_name(rng: random.Random, genre: Genre, origin: tuple[str, str], leader: str) -> str:
    if genre.name == "classical":
        return f"{rng.choice((origin[0], _invented(rng)))} {rng.choice(ENSEMBLE_TYPES['classical'])}"
    if genre.name == "jazz":
        return f"{leader} {rng.choice(ENSEMBLE_TYPES['jazz'])}"
    if genre.name == "metal":
        first, second = rng.sample(METAL_WORDS, 2)
        return rng.choice((f"{first}{second.lower()}", f"{_invented(rng)} {second}", f"{first} of {_invented(rng)}"))
    if genre.name == "edm":
        return rng.choice((f"{_invented(rng)} & {_invented(rng)}", _invented(rng, 3)))
    if genre.name == "hip hop":
        return rng.choice((f"{_invented(rng)} Collective", f"The {_invented(rng)} Crew"))
    return rng.choice((f"The {rng.choice(BAND_ADJECTIVES)} {rng.choice(BAND_NOUNS)}",
                       f"{_invented(rng)} {rng.choice(BAND_NOUNS)}", f"The {_invented(rng)}s"))


def _solo_name(rng: random.Random, genre: Genre, gender: str) -> str:
    prefixes = STAGE_PREFIXES.get(genre.name)
    if prefixes and rng.random() < 0.7:
        return rng.choice((f"{rng.choice(prefixes)} {_invented(rng)}", _invented(rng, 3)))
    return _person(rng, gender)


def _title(rng: random.Random, genre: Genre, mood: str, key: int, mode: int) -> str:
    if genre.name == "classical" and rng.random() < 0.7:
        # Classical titles name their form and key, as real catalogs do.
        form, number = rng.choice(genre.words), rng.randint(1, 24)
        key_name = f"{PITCH_NAMES[key]} {'major' if mode else 'minor'}"
        return rng.choice((f"{form} No. {number} in {key_name}", f"{form} in {key_name}, Op. {rng.randint(2, 99)}",
                           f"{form} No. {number}"))
    words = MOODS[mood]
    adjective = rng.choice(words.adjectives)
    noun = rng.choice(words.nouns) if rng.random() < 0.5 else rng.choice(genre.words)
    other = rng.choice(genre.words + words.nouns)
    return rng.choice((f"{adjective} {noun}", noun, f"The {adjective} {noun}", f"{noun} of the {other}",
                       f"{adjective} {other}"))


def _album_title(rng: random.Random, genre: Genre, mood: str, artist_name: str) -> str:
    if rng.random() < 0.05:
        return artist_name  # self-titled
    if genre.name == "classical":
        first, second = rng.sample(genre.words, 2)
        return rng.choice((f"{_plural(first)} & {_plural(second)}", f"Complete {_plural(first)}",
                           f"{_plural(first)}, Vol. {rng.randint(1, 4)}"))
    words = MOODS[mood]
    noun = rng.choice(words.nouns + genre.words)
    return rng.choice((f"{rng.choice(words.adjectives)} {noun}", noun, f"{noun} Sessions", f"Songs of the {noun}",
                       f"The {noun} Tapes"))


def _artist_roles(rng: random.Random, track: _Track) -> str:
    artist = track.artist
    credits = ", ".join(f"{name} ({role})" for name, role in artist.members)
    if artist.is_band:
        text = f"{artist.name}: {credits}."
    else:
        text = f"{artist.name} ({artist.own_roles})."
        if credits and rng.random() < 0.7:
            text += f" Additional musicians: {credits}."
    text += f" Produced by {rng.choice(artist.producers)}."
    if track.featured is not None:
        guest = track.featured.genre.name
        part = {"hip hop": "rap verse", "edm": "additional production"}.get(guest, "guest vocals")
        if guest in ("jazz", "classical"):
            part = f"guest {track.featured.genre.roles[0]}"
        text += f" Featuring {track.featured.name} ({part})."
    if rng.random() < 0.3:
        text += f" Mixed by {_person(rng)}."
    return text


def _song_facts(rng: random.Random, track: _Track) -> str:
    artist, genre = track.artist, track.genre
    instruments = [r for r in genre.roles[1:] if not any(w in r for w in NOT_INSTRUMENTS)] or ["keyboard"]
    values = {
        "studio": artist.studio, "city": artist.origin[0], "days": rng.randint(2, 30), "year": track.year,
        "producer": rng.choice(artist.producers), "instrument": rng.choice(instruments),
        "chart": rng.randint(1, 40), "genre_display": genre.display, "artist": artist.name,
        "event": rng.choice(FACT_EVENTS), "later_year": min(YEAR_MAX, track.year + rng.randint(3, 25)),
        "minutes": f"{track.f('duration_min'):.1f}", "n": rng.randint(3, 12), "album": track.album.name,
        "ordinal": rng.choice(ORDINALS), "other_genre": rng.choice(("soul", "funk", "jazz", "disco", "gospel")),
        "venue": f"the {_invented(rng)} {rng.choice(VENUE_NOUNS)}",
    }
    pool = list(FACTS) + list(GENRE_FACTS[genre.name]) * 2 + [ALBUM_FACT]
    chosen = [LIVE_FACT] if track.live else []
    chosen += rng.sample(pool, rng.randint(1, 3))
    return " ".join(s.format(**values) for s in chosen)


def _artist_bio(rng: random.Random, artist: _Artist) -> str:
    city, country = artist.origin
    debut = artist.albums[0].name
    if artist.is_band:
        kind = BAND_WORDS.get(artist.genre.name, "band")
        text = (f"{artist.name} is {_a(artist.subgenre)} {kind} formed in {artist.born} in {city}, {country}. "
                f"Its debut album, {debut}, came out in {artist.start}")
        extra = [f"The lineup: {', '.join(f'{n} ({r})' for n, r in artist.members)}."]
    else:
        pronoun = {"male": "He", "female": "She"}.get(artist.gender or "", "They")
        genre = artist.genre.display if artist.genre.display.isupper() else artist.genre.name  # EDM, R&B
        text = (f"{artist.name} is a {artist.gender} {genre} {artist.genre.solo_role} from {city}, "
                f"{country}, born in {artist.born}. {pronoun} released the debut album {debut} in {artist.start}")
        extra = []
    active = artist.end >= YEAR_MAX - 1
    text += ", and the act is still active." if active else f"; the last release came in {artist.end}."
    hit = max(artist.tracks, key=lambda t: t.popularity)
    extra += [
        f"Known for {artist.subgenre} records with {_a(artist.albums[0].mood)} feel.",
        f"The breakthrough came with \"{hit.title}\" in {hit.year}.",
        f"Has released {len(artist.albums)} album{'s' if len(artist.albums) > 1 else ''} and toured widely.",
        f"Won {rng.choice(AWARDS)} in {rng.randint(artist.start, artist.end)}.",
    ]
    return " ".join([text] + rng.sample(extra, rng.randint(1, 3)))


# ----------------------------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------------------------

def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _make_artists(rng: random.Random, num_artists: int) -> list[_Artist]:
    # Round-robin over a shuffled genre order keeps genres balanced, even in tiny catalogs.
    order = list(GENRES)
    rng.shuffle(order)
    producers = {g.name: [_person(rng) for _ in range(2 + num_artists // 40)] for g in GENRES}
    taken: set[str] = set()
    artists = []
    for idx in range(num_artists):
        genre = order[idx % len(order)]
        origin = rng.choice(genre.origins)
        is_band = rng.random() < genre.band_share
        gender = None if is_band else rng.choices(("male", "female", "non-binary"), (0.48, 0.48, 0.04))[0]
        mean_year, sd_year, earliest = genre.era
        start = round(_clamp(rng.gauss(mean_year - 4, sd_year), max(earliest, YEAR_MIN), YEAR_MAX - 1))
        end = min(YEAR_MAX, start + 1 + int(rng.expovariate(1 / 9)))
        if is_band:
            size = {"Trio": 3, "Quartet": 4, "Quintet": 5}
            members = [(_person(rng), genre.roles[0])]
            name = _band_name(rng, genre, origin, members[0][0])
            count = next((n for word, n in size.items() if name.endswith(word)), rng.randint(3, 5))
            members += [(_person(rng), role) for role in rng.sample(genre.roles[1:], min(count, len(genre.roles)) - 1)]
            own_roles, born = "", start - rng.randint(0, 2)
        else:
            name = _solo_name(rng, genre, gender)
            members = [(_person(rng), role) for role in rng.sample(genre.roles[1:], rng.randint(0, 2))]
            own_roles = genre.roles[0] if rng.random() < 0.6 else f"{genre.roles[0]}, {rng.choice(genre.roles[1:])}"
            born = start - rng.randint(17, 32)
        for _ in range(20):  # names identify artists in playlists and credits; keep them unique
            if name not in taken:
                break
            name = _band_name(rng, genre, origin, members[0][0]) if is_band else _solo_name(rng, genre, gender)
        while name in taken:
            name = f"{name} {_invented(rng)}"
        taken.add(name)
        pool_genre = genre.name if rng.random() < 0.85 else rng.choice(genre.related)
        artists.append(_Artist(
            idx=idx, name=name, genre=genre, subgenre=rng.choice(genre.subgenres)[0], is_band=is_band,
            gender=gender, origin=origin, start=start, end=end, born=born, members=members, own_roles=own_roles,
            producers=rng.sample(producers[pool_genre], rng.randint(1, 2)),
            studio=rng.choice((f"{_invented(rng)} Sound", f"Studio {_invented(rng)}",
                               f"The {rng.choice(STUDIO_NOUNS)} Room")),
            has_bio=True, tempo_offset=rng.gauss(0, 4),
            sound_offset=tuple(rng.gauss(0, s * 0.5) for s in FEATURE_SPREAD),
            popularity=rng.lognormvariate(0, 0.5)))
    return artists


def _track_counts(rng: random.Random, num_artists: int, num_tracks: int) -> list[int]:
    """Heavy-tailed tracks per artist (every artist has at least one), like real catalogs."""
    counts = [1] * num_artists
    weights = [rng.lognormvariate(0, 0.8) for _ in range(num_artists)]
    for a in rng.choices(range(num_artists), weights=weights, k=max(0, num_tracks - num_artists)):
        counts[a] += 1
    return counts


def _drop_bios(rng: random.Random, artists: list[_Artist], counts: list[int], num_tracks: int) -> None:
    """Take the biography away from random artists until about MISSING["AB"] of the tracks have none."""
    budget = MISSING["AB"] * num_tracks
    for a in rng.sample(artists, len(artists)):
        if counts[a.idx] <= budget:
            a.has_bio = False
            budget -= counts[a.idx]


def _make_albums(rng: random.Random, artist: _Artist, count: int) -> None:
    n_albums = max(1, round(count / rng.uniform(5, 11)))
    years = sorted(rng.randint(artist.start, artist.end) for _ in range(n_albums))
    for year in years:
        mood = rng.choice(artist.genre.moods)
        artist.albums.append(_Album(_album_title(rng, artist.genre, mood, artist.name), year, mood))


def _release_date(rng: random.Random, year: int) -> str:
    # Older releases more often carry only a year, as in real metadata.
    r = rng.random()
    if r < 0.10 + (0.25 if year < 1980 else 0.0):
        return f"{year}"
    month = rng.randint(1, 12)
    if r > 0.85:
        return f"{year}-{month:02d}"
    return f"{year}-{month:02d}-{rng.randint(1, 28):02d}"


def _make_track(rng: random.Random, artist: _Artist, by_genre: dict[str, list[_Artist]]) -> _Track:
    album = rng.choice(artist.albums)
    genre = artist.genre
    if rng.random() < CROSSOVER_SHARE:
        genre = GENRE_BY_NAME[rng.choice(genre.related)]
    subgenre = artist.subgenre if genre is artist.genre and rng.random() < 0.7 else rng.choice(genre.subgenres)[0]
    mood = album.mood if album.mood in genre.moods and rng.random() < 0.55 else rng.choice(genre.moods)
    activity = None
    if rng.random() < 0.75:
        fitting = [a for a in genre.activities if a in MOODS[mood].activities]
        activity = rng.choice(fitting or list(genre.activities))
    track = _Track(idx=-1, artist=artist, genre=genre, subgenre=subgenre, mood=mood, activity=activity,
                   year=album.year, album=album)

    m = MOODS[mood]
    shift = dict(genre.subgenres)[subgenre]
    track.tempo = round(_clamp(rng.gauss(genre.tempo[0] + shift + m.tempo + artist.tempo_offset,
                                         genre.tempo[1] * 0.5 + 3), 50, 210), 1)
    track.key = rng.choices(range(12), weights=[3 if k in genre.keys else 1 for k in range(12)])[0]
    track.mode = int(rng.random() < _clamp(genre.major + m.major, 0.05, 0.95))
    track.live = rng.random() < LIVE_SHARE
    values = []
    for i, name in enumerate(AUDIO_FEATURES):
        x = genre.sound[i] + m.shift.get(name, 0.0) + artist.sound_offset[i] + rng.gauss(0, FEATURE_SPREAD[i])
        if name == "liveness" and track.live:
            x = rng.uniform(0.65, 0.95)
        values.append(round(_clamp(x, *FEATURE_RANGE[i]), 3))
    track.features = tuple(values)

    if rng.random() < FEATURED_SHARE:
        guest_genre = genre.name if rng.random() < 0.6 else rng.choice(genre.related)
        guests = [a for a in by_genre.get(guest_genre, ()) if a is not artist]
        track.featured = rng.choice(guests) if guests else None
    track.popularity = artist.popularity * rng.lognormvariate(0, 0.6)
    title = _title(rng, genre, mood, track.key, track.mode)
    if track.featured is not None and rng.random() < 0.6:
        title += f" (feat. {track.featured.name})"
    if track.live and rng.random() < 0.7:
        title += " (Live)"
    track.title = title
    track.date = _release_date(rng, track.year)
    return track


def _make_catalog(rng: random.Random, num_tracks: int) -> tuple[list[_Artist], list[_Track]]:
    artists = _make_artists(rng, max(1, round(num_tracks / TRACKS_PER_ARTIST)))
    by_genre: dict[str, list[_Artist]] = {}
    for a in artists:
        by_genre.setdefault(a.genre.name, []).append(a)
    counts = _track_counts(rng, len(artists), num_tracks)
    _drop_bios(rng, artists, counts, num_tracks)
    tracks = []
    for artist, count in zip(artists, counts):
        _make_albums(rng, artist, count)
        for _ in range(count):
            track = _make_track(rng, artist, by_genre)
            artist.tracks.append(track)
            tracks.append(track)
    # Shuffle so that track ids say nothing about the artist.
    rng.shuffle(tracks)
    width = max(6, len(str(num_tracks)))
    for i, t in enumerate(tracks):
        t.idx, t.track_id = i, f"demo-{i:0{width}d}"
    return artists, tracks


def _tags(rng: random.Random, t: _Track) -> list[str]:
    tags = [t.genre.name, t.subgenre, t.mood]
    if t.activity:
        tags.append(t.activity)
    if rng.random() < 0.25:
        tags.append(_decade(t.year))
    if t.artist.gender and t.f("instrumentalness") < 0.5 and rng.random() < 0.3:
        tags.append(f"{t.artist.gender} vocalist")
    if t.f("instrumentalness") > 0.75 and rng.random() < 0.5:
        tags.append("instrumental")
    if t.live:
        tags.append("live")
    if rng.random() < 0.04:  # tagging noise
        tags.append(rng.choice(GENRES).name)
    return list(dict.fromkeys(tags))


def _records(rng: random.Random, miss: random.Random, artists: list[_Artist], tracks: list[_Track]) -> list[dict]:
    bios = {a.idx: _artist_bio(rng, a) for a in artists if a.has_bio}
    # Obscure tracks lack song facts more often than popular ones.
    median_pop = sorted(t.popularity for t in tracks)[len(tracks) // 2]
    out = []
    for t in tracks:
        gone = {m: miss.random() < p for m, p in MISSING.items() if m not in ("SF", "AB")}
        gone["SF"] = miss.random() < (0.40 if t.popularity < median_pop else 0.10)
        gone["AB"] = not t.artist.has_bio
        if all(gone.values()):
            gone["BM"] = False
        key_gone = gone["MC"] or miss.random() < KEY_ONLY_MISSING
        roles, facts, tags = _artist_roles(rng, t), _song_facts(rng, t), _tags(rng, t)
        out.append({
            "track_id": t.track_id,
            "title": None if gone["BM"] else t.title,
            "artist": None if gone["BM"] else t.artist.name,
            "album": None if gone["BM"] or miss.random() < ALBUM_MISSING else t.album.name,
            "artist_roles": None if gone["AC"] else roles,
            "tags": None if gone["ST"] else tags,
            "audio_features": None if gone["SC"] else list(t.features),
            "tempo": None if gone["MC"] else t.tempo,
            "key": None if key_gone else t.key,
            "mode": None if key_gone else t.mode,
            "release_date": None if gone["RI"] else t.date,
            "song_facts": None if gone["SF"] else facts,
            "artist_bio": None if gone["AB"] else bios[t.artist.idx],
            "genre": t.genre.name,
        })
    return out


# ----------------------------------------------------------------------------------------------------------------
# Playlists
# ----------------------------------------------------------------------------------------------------------------

def _decade(year: int) -> str:
    d = year // 10 * 10
    return f"{d % 100:02d}s" if d < 2000 else f"{d}s"


@dataclass
class _Theme:
    kind: str
    values: dict[str, str]  # fills the name templates
    members: list[int]  # indices of tracks that satisfy the theme
    names: tuple[str, ...]
    used: int = 0
    uncovered: int = 0  # members in no playlist yet

    def __post_init__(self):
        self.uncovered = len(self.members)


def _themes(tracks: list[_Track], artists: list[_Artist]) -> dict[str, list[_Theme]]:
    groups: dict[tuple, list[int]] = {}
    for t in tracks:
        groups.setdefault(("genre_mood", t.genre.name, t.mood), []).append(t.idx)
        groups.setdefault(("era_genre", t.genre.name, _decade(t.year)), []).append(t.idx)
        if t.activity:
            groups.setdefault(("activity", t.genre.name, t.activity), []).append(t.idx)
    themes: dict[str, list[_Theme]] = {kind: [] for kind in PLAYLIST_KINDS}
    for (kind, genre, value), members in groups.items():
        if len(members) < MIN_THEME:
            continue
        values = {"genre": GENRE_BY_NAME[genre].display}
        if kind == "genre_mood":
            values["mood"], names = value.capitalize(), GENRE_MOOD_NAMES
        elif kind == "era_genre":
            values["decade"], names = value, ERA_NAMES
        else:
            values["activity"] = ACTIVITIES[value][0]
            names = tuple(n.replace("{ending}", e) for n in ACTIVITY_NAMES for e in ACTIVITIES[value][1])
        themes[kind].append(_Theme(kind, values, members, names))
    guest_on: dict[int, list[int]] = {}
    for t in tracks:
        if t.featured is not None:
            guest_on.setdefault(t.featured.idx, []).append(t.idx)
    for a in artists:
        members = [t.idx for t in a.tracks] + guest_on.get(a.idx, [])
        if len(members) >= MIN_THEME:
            themes["artist"].append(_Theme("artist", {"artist": a.name}, members, ARTIST_PLAYLIST_NAMES))
    for names, test in FEATURE_THEMES:
        members = [t.idx for t in tracks if test(t)]
        if len(members) >= MIN_THEME:
            themes["feature"].append(_Theme("feature", {}, members, names))
    return {kind: ts for kind, ts in themes.items() if ts}


def _fallback_themes(tracks: list[_Track]) -> list[_Theme]:
    """Tiny catalogs have no theme big enough: fall back to one theme per genre."""
    groups: dict[str, list[int]] = {}
    for t in tracks:
        groups.setdefault(t.genre.name, []).append(t.idx)
    return [_Theme("genre", {"genre": GENRE_BY_NAME[g].display}, m, FALLBACK_NAMES) for g, m in groups.items()]


def _weighted_sample(rng: random.Random, items: list[int], weights: list[float], k: int) -> list[int]:
    # Efraimidis-Spirakis keys u**(1/w): a weighted sample without replacement in one pass.
    return [i for _, i in heapq.nlargest(k, ((rng.random() ** (1.0 / w), i) for i, w in zip(items, weights)))]


def _fill(rng: random.Random, theme: _Theme, tracks: list[_Track], in_lists: list[int]) -> list[int]:
    """On-theme tracks (favouring popular ones and ones in no playlist yet) plus a little off-theme noise."""
    size, noise_share = rng.randint(*PLAYLIST_SIZE), rng.uniform(*NOISE_SHARE)
    n_on = min(len(theme.members), size - round(size * noise_share))
    weights = [tracks[i].popularity / (1 + in_lists[i]) ** 2 for i in theme.members]
    chosen = _weighted_sample(rng, theme.members, weights, n_on)
    n_noise = max(PLAYLIST_SIZE[0] - n_on, min(size - n_on, round(n_on * noise_share / (1 - noise_share))))
    n_noise = min(n_noise, len(tracks) - len(theme.members))
    members, noise = set(theme.members), []
    for _ in range(50 * n_noise):
        if len(noise) >= n_noise:
            break
        i = rng.randrange(len(tracks))
        if i not in members and i not in noise:
            noise.append(i)
    if theme.kind == "artist":
        chosen.sort(key=lambda i: -tracks[i].popularity)
        for i in noise:
            chosen.insert(rng.randint(1, len(chosen)), i)
        return chosen
    chosen += noise
    rng.shuffle(chosen)
    return chosen


def _name(rng: random.Random, theme: _Theme, seen: dict[str, int]) -> str:
    name = rng.choice(theme.names).format(**theme.values)
    if theme.kind != "artist" and rng.random() < 0.1:
        name = name.lower()  # people often type names in lower case
    seen[name] = seen.get(name, 0) + 1
    return name if seen[name] == 1 else f"{name} Vol. {seen[name]}"


def _make_playlists(rng: random.Random, tracks: list[_Track], artists: list[_Artist]) -> list[Playlist]:
    themes = _themes(tracks, artists) or {"genre": _fallback_themes(tracks)}
    in_lists = [0] * len(tracks)
    holders: list[list[_Theme]] = [[] for _ in tracks]  # themes of each track, to keep `uncovered` current
    for ts in themes.values():
        for theme in ts:
            for i in theme.members:
                holders[i].append(theme)
    seen_names: dict[str, int] = {}
    playlists = []
    for n in range(1, max(1, round(len(tracks) / TRACKS_PER_PLAYLIST)) + 1):
        kinds = [k for k, ts in themes.items() if any(t.used == 0 or k != "artist" for t in ts)]
        kind = rng.choices(kinds, weights=[PLAYLIST_KINDS.get(k, 1.0) for k in kinds])[0]
        options = [t for t in themes[kind] if t.used == 0 or kind != "artist"]
        # Prefer themes with tracks that no playlist holds yet, and themes not used before.
        weights = [(1 + t.uncovered) * 0.2 ** t.used for t in options]
        theme = rng.choices(options, weights=weights)[0]
        chosen = _fill(rng, theme, tracks, in_lists)
        theme.used += 1
        for i in chosen:
            if in_lists[i] == 0:
                for holder in holders[i]:
                    holder.uncovered -= 1
            in_lists[i] += 1
        name = _name(rng, theme, seen_names)
        playlists.append(Playlist(f"demo-pl-{n:04d}", name, [tracks[i].track_id for i in chosen]))
    return playlists


def generate_demo(num_tracks: int = DEFAULT_NUM_TRACKS, seed: int = 0) -> tuple[list[dict], list[Playlist]]:
    """-> (raw catalog records, playlists). Same (num_tracks, seed) -> identical output."""
    if num_tracks < 1:
        raise ValueError(f"num_tracks must be >= 1, got {num_tracks}")
    # Separate streams: which fields go missing and how playlists are drawn never change the tracks themselves.
    artists, tracks = _make_catalog(random.Random(f"demo-catalog:{seed}"), num_tracks)
    records = _records(random.Random(f"demo-text:{seed}"), random.Random(f"demo-missing:{seed}"), artists, tracks)
    playlists = _make_playlists(random.Random(f"demo-playlists:{seed}"), tracks, artists)
    return records, playlists
