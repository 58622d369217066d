"""SFT data for 3MTokenRec: D_qt queries + the token database -> tokenized chat examples with assistant-only labels.

Each example is a chat: system prompt, user = a D_qt query, assistant = the track's token sequence
`<begin_3MToken><AC1-3>...<TC3-9><end_3MToken>` (modalities in registry order, levels 1..L). `input_ids` hold the
whole conversation through the chat template; `labels` are -100 on the system and user part and equal to the
input ids on the assistant part, including the end-of-turn token, so the loss covers exactly what the model must
generate. Train/eval follow the track split recorded in D_qt (`split` column), which later evaluation respects.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from data_gen.records import read_records
from tokenizer_ext.token_db import TokenDB

DEFAULT_SYSTEM_PROMPT = (
    "You are a music recommender. Answer the listener's request with the 3MToken identifier of one track "
    "that fits it."
)
IGNORE_INDEX = -100


def track_answer(db: TokenDB, row: int) -> str:
    """The assistant message for a track: its token strings, concatenated without separators."""
    return "".join(db.tokens(row))


def read_dqt(path: str | Path) -> list[dict]:
    """Read D_qt (JSONL or parquet) -> list of rows with at least track_id, query and split."""
    rows = read_records(path)
    for i, row in enumerate(rows, start=1):
        for key in ("track_id", "query"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{path}: row {i}: field '{key}' missing or empty")
    return rows


def tokenize_chat(tokenizer, prompt: list[dict], completion: list[dict], max_length: int | None = None) -> dict:
    """Chat messages -> {"input_ids", "labels", "completion_mask"} with the loss on the completion only."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
    if hasattr(prompt_ids, "input_ids"):  # transformers >= 5 returns a BatchEncoding
        prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    prompt_ids, full_ids = list(prompt_ids), list(full_ids)
    if full_ids[:len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template renders the prompt differently inside the full conversation")
    if max_length is not None and len(full_ids) > max_length:
        raise ValueError(f"example of {len(full_ids)} tokens exceeds max_length={max_length}")
    mask = [0] * len(prompt_ids) + [1] * (len(full_ids) - len(prompt_ids))
    labels = [tok if m else IGNORE_INDEX for tok, m in zip(full_ids, mask)]
    return {"input_ids": full_ids, "labels": labels, "completion_mask": mask}


def build_examples(dqt_rows: Iterable[dict], db: TokenDB, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> dict:
    """D_qt rows -> {"train": [...], "test": [...]} of prompt/completion chats (+ track_id, query).

    Rows whose track is not in the token database are counted under "skipped_unknown_track", never dropped silently.
    """
    row_of = db.row_of()
    out: dict[str, list[dict]] = {"train": [], "test": []}
    skipped = 0
    for r in dqt_rows:
        row = row_of.get(r["track_id"])
        if row is None:
            skipped += 1
            continue
        split = r.get("split", "train")
        if split not in out:
            raise ValueError(f"unknown split {split!r} for track {r['track_id']}")
        out[split].append({
            "prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": r["query"]}],
            "completion": [{"role": "assistant", "content": track_answer(db, row)}],
            "track_id": r["track_id"], "query": r["query"],
        })
    return {**out, "skipped_unknown_track": skipped}


def build_sft_dataset(dqt_path: str | Path, token_db_dir: str | Path, tokenizer,
                      system_prompt: str = DEFAULT_SYSTEM_PROMPT, max_length: int | None = None):
    """-> (datasets.DatasetDict with "train"/"test" of input_ids/labels/completion_mask/track_id, counts dict).

    The tokenizer must already hold the music tokens (tokenizer_ext.vocab.add_music_tokens)."""
    from datasets import Dataset, DatasetDict

    db = TokenDB.load(token_db_dir)
    examples = build_examples(read_dqt(dqt_path), db, system_prompt)
    splits = {}
    for name in ("train", "test"):
        rows = [{**tokenize_chat(tokenizer, ex["prompt"], ex["completion"], max_length), "track_id": ex["track_id"]}
                for ex in examples[name]]
        if rows:
            splits[name] = Dataset.from_list(rows)
    counts = {name: len(examples[name]) for name in ("train", "test")}
    counts["skipped_unknown_track"] = examples["skipped_unknown_track"]
    return DatasetDict(splits), counts
