"""Template query generator: deterministic, covers every intent, fills only known fields; the template D_qt run."""

import json

import pyarrow.parquet as pq

from data_gen.catalog.track_split import split_tracks
from data_gen.synth.dqt import DQT_COLUMNS, DqtConfig
from data_gen.synth.dqt import run as dqt_run
from data_gen.synth.query_templates import PHRASINGS, RICH_PHRASINGS, template_query
from data_gen.synth.track_facts import INTENTS, OPT_IN_INTENTS, TrackFacts, intent_for, track_facts
from tests.data_gen.synth.llm_helpers import FAST, demo_run_dir

FULL = TrackFacts(track_id="t1", title="Ghosts", artist="Nadia", album="Tapes", tags=("folk", "celtic folk"),
                  year=1982, tempo_bpm=93, key_name="C major", mode=1)


def test_same_inputs_same_query_and_seed_changes_wording():
    queries = {intent: template_query(FULL, intent, 0, seed=0) for intent in INTENTS}
    assert queries == {intent: template_query(FULL, intent, 0, seed=0) for intent in INTENTS}
    tracks = [TrackFacts(**{**FULL.__dict__, "track_id": f"t{i}"}) for i in range(40)]
    by_seed = [[template_query(t, "combination", 0, seed) for t in tracks] for seed in (0, 1)]
    assert by_seed[0] != by_seed[1]


def test_every_intent_reads_its_facts():
    for slot in range(20):
        q = {intent: template_query(FULL, intent, slot, seed=3) for intent in INTENTS}
        assert all(q.values()) and not any("{" in v or "}" in v for v in q.values())
        assert "Nadia" in q["artist"]
        assert any(w in q["genre"] for w in ("folk", "celtic folk"))
        assert any(w in q["era"] for w in ("1980s", "1982", "early 1980s"))
        assert "warm and mellow" in q["mood"]
    assert set(PHRASINGS) == set(INTENTS + OPT_IN_INTENTS)


def test_intent_cycle_covers_all_intents_and_skips_missing_fields():
    assert {intent_for(FULL, slot, seed=0) for slot in range(len(INTENTS))} == set(INTENTS)
    starts = {intent_for(TrackFacts(**{**FULL.__dict__, "track_id": f"x{i}"}), 0, seed=0) for i in range(200)}
    assert starts == set(INTENTS)  # with one query per track, every intent still appears across tracks
    sparse = TrackFacts(track_id="s", title="Only A Title")
    for slot in range(6):
        intent = intent_for(sparse, slot, seed=0)
        assert intent in sparse.available_intents()
        assert template_query(sparse, intent, slot, seed=0)
    no_tags = track_facts({"track_id": "n", "artist": "A", "release_date": "2001-05", "tempo": 150.0})
    assert "genre" not in no_tags.available_intents() and "activity" in no_tags.available_intents()
    assert {intent_for(no_tags, s, 0) for s in range(6)} <= set(no_tags.available_intents())


def test_template_dqt_run_is_deterministic_and_split_by_track(tmp_path):
    run_dir = demo_run_dir(tmp_path, num_tracks=15)
    cfg = DqtConfig(run_dir=str(run_dir), mode="template", num_queries=2, **FAST)
    result = dqt_run(cfg)
    path = run_dir / "dqt" / "dqt.jsonl"
    first = path.read_bytes()
    rows = [json.loads(line) for line in first.decode().splitlines()]
    assert len(rows) == 30 and result["report"]["requests_sent"] == 0
    assert all(tuple(r) == DQT_COLUMNS and r["source"] == "template" and r["query"] for r in rows)
    ids = sorted({r["track_id"] for r in rows})
    test = dict(zip(ids, split_tracks(ids, 0.2, 0)))
    assert all(r["split"] == ("test" if test[r["track_id"]] else "train") for r in rows)
    dqt_run(DqtConfig(run_dir=str(run_dir), mode="template", num_queries=2, overwrite=True, **FAST))
    assert path.read_bytes() == first
    manifest = json.loads((run_dir / "dqt" / "dqt_manifest.json").read_text())
    assert manifest["split"] == {"source": "data_gen.catalog.track_split.split_tracks", "test_fraction": 0.2, "seed": 0}


def test_intents_restrict_the_cycle_and_count_tracks_without_them():
    assert {intent_for(FULL, slot, seed=0, allowed=("artist",)) for slot in range(6)} == {"artist"}
    assert {intent_for(FULL, s, 0, allowed=("genre", "era")) for s in range(6)} == {"genre", "era"}
    no_artist = track_facts({"track_id": "n", "title": "T", "release_date": "2001-05", "tempo": 150.0})
    assert intent_for(no_artist, 0, seed=0, allowed=("artist",)) is None


def test_album_intent_is_opt_in_and_names_the_album():
    # the default cycle never picks an opt-in intent, so the default D_qt is what it was before album existed
    assert all(intent_for(TrackFacts(**{**FULL.__dict__, "track_id": f"x{i}"}), s, 0) != "album"
               for i in range(50) for s in range(6))
    assert {intent_for(FULL, s, 0, allowed=("album",)) for s in range(6)} == {"album"}
    assert {intent_for(FULL, s, 0, allowed=("artist", "album")) for s in range(14)} == {"artist", "album"}
    no_album = TrackFacts(track_id="n", title="T", artist="A")
    assert "album" not in no_album.available_intents() and intent_for(no_album, 0, 0, allowed=("album",)) is None
    for style in ("basic", "rich"):
        queries = {template_query(FULL, "album", slot, seed=1, style=style) for slot in range(30)}
        assert all("Tapes" in q for q in queries) and len(queries) > 2
    assert "{album}" in RICH_PHRASINGS["album"]  # the bare album name: compilations read like playlist names


def _one_intent_dqt(tmp_path, intent: str):
    """A 15-track demo run's D_qt with one rich request of `intent` per track -> (run_dir, config, counts, rows)."""
    run_dir = demo_run_dir(tmp_path, num_tracks=15)
    cfg = DqtConfig(run_dir=str(run_dir), mode="template", templates="rich", intents=intent, num_queries=1,
                    test_fraction=0.0, out_dir=str(tmp_path / intent), **FAST)
    counts = dqt_run(cfg)["counts"]
    return run_dir, cfg, counts, [json.loads(line) for line in open(tmp_path / intent / "dqt.jsonl")]


def test_artist_requests_for_every_track_minus_excluded_requests(tmp_path):
    _, cfg, counts, rows = _one_intent_dqt(tmp_path, "artist")
    assert counts["rows"] + counts["skipped_no_intent"] == 15 and counts["excluded_requests"] == 0
    assert all(r["intent"] == "artist" and r["split"] == "train" for r in rows)
    # a held-out playlist named like one of the requests: that request is never a training request
    target = rows[0]["query"]
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps({"playlist_id": "p", "name": f"  {target.upper()}!! ", "tracks": ["x"]}) + "\n")
    cfg = DqtConfig(**{**cfg.__dict__, "exclude_requests": str(held_out), "overwrite": True})
    counts2 = dqt_run(cfg)["counts"]
    kept = [json.loads(line)["query"] for line in open(tmp_path / "artist" / "dqt.jsonl")]
    dropped = sum(r["query"] == target for r in rows)
    assert dropped >= 1 and counts2["excluded_requests"] == dropped and target not in kept
    assert counts2["rows"] + counts2["excluded_requests"] == counts["rows"]


def test_album_requests_name_each_tracks_album(tmp_path):
    run_dir, _, counts, rows = _one_intent_dqt(tmp_path, "album")
    catalog = pq.read_table(run_dir / "catalog.parquet", columns=["track_id", "album"]).to_pylist()
    albums = {r["track_id"]: r["album"] for r in catalog}
    assert counts["rows"] + counts["skipped_no_intent"] == 15 and counts["rows"] == sum(map(bool, albums.values()))
    assert rows and all(r["intent"] == "album" and albums[r["track_id"]] in r["query"] for r in rows)


def test_rich_requests_name_the_decade_as_playlists_do_and_change_nothing_else(monkeypatch):
    forms = ("1980s", "1980's", "80s", "80's", "eighties")
    assert FULL.decade_names == forms
    assert TrackFacts(track_id="n", title="New", year=2004).decade_names == ("2000s", "2000's")
    assert TrackFacts(track_id="o", title="Old", year=1962).decade_names[4] == "sixties"
    grid = [(intent, slot) for intent in INTENTS for slot in range(40)]
    spoken = {k: template_query(FULL, *k, seed=0, style="rich") for k in grid}
    assert set(forms) <= {w for q in spoken.values() for w in q.split()}
    basic = " ".join(template_query(FULL, *k, seed=0, style="basic") for k in grid)
    assert "1980s" in basic and not set(forms[1:]) & set(basic.split())  # basic style as it was
    # without the spoken forms (as before them), every rich request is the same but for the decade's wording
    monkeypatch.setattr(TrackFacts, "decade_names", property(lambda self: ()))
    for k, q in spoken.items():
        long = template_query(FULL, *k, seed=0, style="rich")
        assert q == long or " ".join("1980s" if w in forms else w for w in q.split()) == long, k


def test_mention_requests_name_the_artist_or_title_words_among_other_words():
    assert all(intent_for(TrackFacts(**{**FULL.__dict__, "track_id": f"x{i}"}), s, 0) not in OPT_IN_INTENTS
               for i in range(50) for s in range(6))  # opt-in: the default D_qt is what it was
    assert {intent_for(FULL, s, 0, allowed=("artist", "album")) for s in range(14)} == {"artist", "album"}
    song = TrackFacts(track_id="m", title="Ritmo Do Meu Flow (Village 2019 Anthem)", artist="D-Rashid",
                      album="Flow Sessions", tags=("latin pop",), year=2019, tempo_bpm=120, mode=1)
    assert intent_for(song, 0, 0, allowed=("mention",)) == "mention"
    names = {"d-rashid", "flow sessions", "ritmo do meu flow (village 2019 anthem)"}
    title_words = "ritmo do meu flow village 2019 anthem"
    queries = [template_query(song, "mention", slot, seed=0, style="rich").lower() for slot in range(80)]
    for q in queries:  # every request names the artist, the song, the album or a run of 2+ title or album words
        assert any(n in q for n in names) or any(" ".join(q.split()[i:i + 2]) in title_words + " flow sessions"
                                                 for i in range(len(q.split()) - 1)), q
    assert sum(q.startswith("d-rashid ") or q.endswith(" d-rashid") for q in queries) >= 10  # among other words
    assert any(w in q for q in queries for w in ("tour", "live", "setlist", "deluxe", "2019", "latin pop"))
    assert any(q.split() != q.split()[:1] and "d-rashid" not in q for q in queries)  # title words alone
    cased = [template_query(song, "mention", slot, seed=0, style="rich") for slot in range(80)]
    assert any(q.isupper() for q in cased) and any(q == q.lower() for q in cased)
    assert len(set(queries)) > 40 and cased == [template_query(song, "mention", s, 0, "rich") for s in range(80)]


def test_mention_requests_for_every_track_with_an_artist_or_title(tmp_path):
    run_dir, _, counts, rows = _one_intent_dqt(tmp_path, "mention")
    catalog = pq.read_table(run_dir / "catalog.parquet", columns=["track_id", "title", "artist", "album"]).to_pylist()
    named = {r["track_id"]: r for r in catalog if r["title"] or r["artist"]}
    assert counts["rows"] + counts["skipped_no_intent"] == 15 and counts["rows"] == len(named) == len(rows)
    for r in rows:
        track, q = named[r["track_id"]], r["query"].lower()
        words = {w.strip("()[]").lower() for w in f"{track['title']} {track['artist']} {track['album']}".split()}
        assert r["intent"] == "mention" and words & {w.strip("()[]") for w in q.split()}, (q, track)
