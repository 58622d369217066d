"""Validation of model outputs (hand-made), the prompt loader, and the crash-tolerant result logs."""

import json

import pytest

from common.registry import MODALITY_NAMES
from data_gen.synth.dqt import QUERY_SCHEMA, validate_query
from data_gen.synth.dr import SCORES_SCHEMA, modality_lines, relevance_messages, validate_scores
from data_gen.synth.llm_client import InvalidOutput, parse_json_object
from data_gen.synth.llm_store import ResultLog, read_jsonl
from data_gen.synth.prompts import load_prompt

GOOD = {m: i % 11 for i, m in enumerate(MODALITY_NAMES)}


def _reason(fn, text):
    with pytest.raises(InvalidOutput) as err:
        fn(text)
    return err.value.reason


def test_scores_accept_strict_json_fences_and_integral_floats():
    assert validate_scores(json.dumps(GOOD)) == GOOD
    assert validate_scores("```json\n" + json.dumps(GOOD) + "\n```") == GOOD
    assert validate_scores("  " + json.dumps({**GOOD, "AC": 7.0}) + "\n") == {**GOOD, "AC": 7}


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("The most relevant modality is ST.", "prose"),
    ("Here you go: " + json.dumps(GOOD), "prose"),
    (json.dumps(GOOD) + " I hope this helps!", "prose"),
    ('{"AC": 1, "BM": ', "not_json"),
    ("[1, 2, 3]", "not_json"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "TC"}), "wrong_keys"),
    (json.dumps({**GOOD, "XX": 3}), "wrong_keys"),
    (json.dumps({**GOOD, "SC": 11}), "out_of_range"),
    (json.dumps({**GOOD, "SC": -1}), "out_of_range"),
    (json.dumps({**GOOD, "SC": 7.5}), "not_integer"),
    (json.dumps({**GOOD, "SC": "7"}), "not_integer"),
    (json.dumps({**GOOD, "SC": True}), "not_integer"),
    (json.dumps({**GOOD, "SC": None}), "not_integer"),
])
def test_scores_reject(text, reason):
    assert _reason(validate_scores, text) == reason


def test_query_validation():
    assert validate_query('{"query": "  play some   90s rock "}') == {"query": "play some 90s rock"}
    assert validate_query('```json\n{"query": "chill jazz"}\n```') == {"query": "chill jazz"}
    assert _reason(validate_query, '{"query": ""}') == "empty_query"
    assert _reason(validate_query, '{"query": "  \\"\\" "}') == "empty_query"
    assert _reason(validate_query, '{"q": "rock"}') == "wrong_keys"
    assert _reason(validate_query, '{"query": "rock", "intent": "genre"}') == "wrong_keys"
    assert _reason(validate_query, '{"query": 5}') == "not_string"
    assert _reason(validate_query, "play some 90s rock") == "prose"
    assert _reason(validate_query, json.dumps({"query": "word " * 60})) == "too_long"
    assert _reason(validate_query, '{"query": "Mood: warm and mellow"}') == "copied_label"
    assert _reason(validate_query, '{"query": "combination"}') == "too_short"
    for short in ("...", "2018", "MUSIC", "a b"):
        assert _reason(validate_query, json.dumps({"query": short})) == "too_short"
    assert _reason(validate_query, '{"query": "songs by [artist]"}') == "placeholder"
    assert validate_query('{"query": "Björk songs"}')["query"] == "Björk songs"
    assert validate_query('{"query": "90s rock: something loud"}')["query"] == "90s rock: something loud"
    assert parse_json_object('{"a": {"b": 1}}') == {"a": {"b": 1}}


def test_prompts_are_versioned_and_filled():
    prompt = load_prompt("modality_relevance_v1")
    assert prompt.version.startswith("modality_relevance_v1@") and len(prompt.version.split("@")[1]) == 8
    messages = relevance_messages(prompt, 'play "Hey Jude"')
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "play 'Hey Jude'" in messages[1]["content"] and "$" not in messages[1]["content"]
    assert all(f"- {m}:" in modality_lines() for m in MODALITY_NAMES)
    with pytest.raises(KeyError):
        load_prompt("query_generation_v1").messages(facts="- title: x")  # a placeholder left unfilled
    assert SCORES_SCHEMA["required"] == list(MODALITY_NAMES)
    assert QUERY_SCHEMA["required"] == ["query"]


def test_result_log_ignores_and_cuts_a_torn_last_line(tmp_path):
    log = ResultLog(tmp_path)
    log.add_item({"key": "a", "order": 0})
    log.add_failure({"key": "b", "order": 1, "reason": "invalid_prose"})
    with pytest.raises(RuntimeError):
        log.add_item({"key": "a", "order": 0})  # never twice
    log.close()
    with open(tmp_path / "items.jsonl", "a") as fh:
        fh.write('{"key": "c", "ord')  # SIGKILL in the middle of a write
    assert [r["key"] for r in read_jsonl(tmp_path / "items.jsonl")] == ["a"]
    log = ResultLog(tmp_path)
    assert log.done == {"a", "b"}
    log.add_item({"key": "c", "order": 2})
    log.close()
    assert [r["key"] for r in read_jsonl(tmp_path / "items.jsonl")] == ["a", "c"]
    (tmp_path / "bad.jsonl").write_text('{"key": 1}\nnot json\n{"key": 2}\n')
    with pytest.raises(ValueError):
        read_jsonl(tmp_path / "bad.jsonl")
