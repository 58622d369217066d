"""Mood words from catalog quantiles, phrases per modality, rich templates, the playlists source of D_qt and the
derived relevance labels."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.synth.dqt import DqtConfig
from data_gen.synth.dqt import run as dqt_run
from data_gen.synth.dr import derived_scores, playlist_scores
from data_gen.synth.query_templates import RICH_PHRASINGS, template_query
from data_gen.synth.track_facts import INTENTS, OPT_IN_INTENTS, track_facts
from data_gen.synth.words import AudioScale, describe_short, modality_phrases

NAMES = ("danceability", "energy", "valence")


def _scale():
    rng = np.random.default_rng(0)
    x = rng.random((400, 3))
    return AudioScale(NAMES, np.quantile(x, 0.25, axis=0), np.quantile(x, 0.75, axis=0))


def test_audio_words_follow_the_catalog_quartiles():
    scale = _scale()
    assert set(scale.words([0.99, 0.99, 0.99])) >= {"danceable", "energetic", "happy"}
    assert set(scale.words([0.01, 0.01, 0.01])) >= {"calm", "sad"} and "danceable" not in scale.words([0.01] * 3)
    assert scale.words([0.5, 0.5, 0.5]) == ()  # the middle half names nothing
    assert scale.level([0.5, 0.99, 0.5], "energy") == "high" and scale.level([0.5] * 3, "tempo") is None


def test_phrases_and_rich_templates_use_every_field():
    rec = {"track_id": "t1", "title": "Ghosts", "artist": "Nadia", "album": "Tapes", "tags": ["rock", "hard rock"],
           "release_date": "1975-03-01", "tempo": 150.0, "key": 9, "mode": 0, "audio_features": [0.9, 0.95, 0.1]}
    facts = track_facts(rec, audio=_scale())
    phrases = modality_phrases(facts)
    assert phrases["ST"] == ["rock", "hard rock"] and "Nadia" in phrases["BM"] and "1970s" in phrases["RI"]
    assert "energetic" in phrases["SC"] and "fast" in phrases["MC"] and "A minor" in phrases["MC"]
    assert facts.extra["energy"] == "high"
    assert "Ghosts by Nadia" in describe_short(facts) and "hard rock" in describe_short(facts)
    seen = set()
    for slot in range(40):
        for intent in INTENTS:
            q = template_query(facts, intent, slot, seed=0, style="rich")
            assert q and "{" not in q
            seen.add(q)
    words = " ".join(seen)
    for expected in ("hard rock", "Nadia", "1975", "1970s", "energetic", "workout"):
        assert expected in words, expected
    assert set(RICH_PHRASINGS) == set(INTENTS + OPT_IN_INTENTS)
    with pytest.raises(ValueError):
        template_query(facts, "genre", 0, 0, style="fancy")


def test_playlists_source_writes_one_row_per_member(tmp_path):
    pq.write_table(pa.table({"track_id": ["a", "b", "c"]}), tmp_path / "catalog.parquet")
    lists = [{"playlist_id": "p1", "name": "70s Hard Rock", "tracks": ["a", "b"]},
             {"playlist_id": "p2", "name": "Chill", "tracks": ["c"]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lists))
    result = dqt_run(DqtConfig(run_dir=str(tmp_path), mode="playlists", playlists=str(tmp_path / "train.jsonl")))
    rows = [json.loads(line) for line in (tmp_path / "dqt" / "dqt.jsonl").read_text().splitlines()]
    assert [(r["query"], r["track_id"], r["split"], r["source"]) for r in rows] == [
        ("70s Hard Rock", "a", "train", "playlists"), ("70s Hard Rock", "b", "train", "playlists"),
        ("Chill", "c", "train", "playlists")]
    assert result["counts"]["playlists"] == 2
    # a held-out playlist with a training playlist's name (other case and spacing): its rows are never trained on
    (tmp_path / "held_out.jsonl").write_text(json.dumps({"playlist_id": "e", "name": "70S  hard rock", "tracks": []}))
    result = dqt_run(DqtConfig(run_dir=str(tmp_path), mode="playlists", playlists=str(tmp_path / "train.jsonl"),
                               exclude_requests=str(tmp_path / "held_out.jsonl")))
    rows = [json.loads(line) for line in (tmp_path / "dqt" / "dqt.jsonl").read_text().splitlines()]
    assert [r["query"] for r in rows] == ["Chill"]
    assert result["counts"]["excluded_requests"] == 2 and result["counts"]["rows"] == 1
    with pytest.raises(SystemExit):
        dqt_run(DqtConfig(run_dir=str(tmp_path), mode="playlists"))


def test_derived_relevance_labels():
    phrases = {"BM": ["Nadia", "Ghosts"], "ST": ["hard rock"], "RI": ["1975", "1970s"], "SC": ["energetic"]}
    s = derived_scores("70s hard rock like Nadia", phrases)
    assert s["ST"] == 9 and s["BM"] == 9 and s["SC"] == 1 and s["TC"] == 1
    assert derived_scores("energetic 1970s", phrases)["RI"] == 9
    assert derived_scores("workout mix", phrases, ["workout"])["SC"] == 6
    codes = {"ST": np.array([0, 0, 0, 1, 2, 3]), "RI": np.array([0, 1, 2, 3, 4, 5])}
    base = {"ST": 0.1, "RI": 0.0}
    out = playlist_scores([0, 1, 2], codes, base)
    assert out["ST"] == 10 and out["RI"] == 0  # all three share ST, none shares RI
