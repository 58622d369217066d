"""SFT data for 3MTokenRec: D_qt queries + the token database -> tokenized chat examples with assistant-only labels.

Chat: system prompt, user = a D_qt query, assistant = the track's `<begin_3MToken>...<end_3MToken>` sequence.
`labels` are -100 outside the assistant part and include its end-of-turn token. Train/eval follow D_qt's `split`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from common.records import read_records
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


def request_tokenizer(tokenizer):
    """The bundle's tokenizer set up for batched generation (inference.recommend): padding on the left, EOS as the
    padding token when it has none. Returns the same tokenizer."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def request_chat(system_prompt: str | None, text: str) -> list[dict]:
    """A request as the bundle's model reads it at inference: its system prompt, if any, then the request."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": text}]


def request_prompts(tokenizer, system_prompt: str | None, texts: Sequence[str]) -> list[str]:
    """Requests -> the rendered chat prompts of `request_chat`, ready for generation."""
    return [tokenizer.apply_chat_template(request_chat(system_prompt, t), tokenize=False, add_generation_prompt=True)
            for t in texts]


def encode_requests(tokenizer, prompts: Sequence[str]):
    """Rendered prompts -> the left-padded batch `model.generate` takes (the template already holds BOS and the turn
    markers, so the tokenizer adds no special tokens of its own)."""
    return tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)


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
            "prompt": request_chat(system_prompt, r["query"]),
            "completion": [{"role": "assistant", "content": track_answer(db, row)}],
            "track_id": r["track_id"], "query": r["query"],
        })
    return {**out, "skipped_unknown_track": skipped}


def as_paths(value: str | Sequence[str]) -> list[str]:
    """One path, a comma-separated string or a list -> list of paths."""
    items = [value] if isinstance(value, (str, Path)) else list(value)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def mixed_dqt_rows(paths: Sequence[str], repeats: Sequence[int] | None = None) -> tuple[list[dict], dict]:
    """The mixing rule of several D_qt files: every row of every file once per epoch, file i repeated
    `repeats[i]` times (default 1) -> (rows, rows per file)."""
    repeats = list(repeats or [])
    if repeats and len(repeats) != len(paths):
        raise ValueError(f"dqt_repeat has {len(repeats)} entries for {len(paths)} D_qt files")
    rows, per_file = [], {}
    for i, path in enumerate(paths):
        part = read_dqt(path)
        n = int(repeats[i]) if repeats else 1
        rows += part * n
        per_file[str(path)] = {"rows": len(part), "repeat": n}
    return rows, per_file


def _tokenize_example(example: dict, tokenizer, max_length: int | None) -> dict:
    return {**tokenize_chat(tokenizer, example["prompt"], example["completion"], max_length),
            "track_id": example["track_id"]}


def build_sft_dataset(dqt_path: str | Sequence[str], db: TokenDB, tokenizer,
                      system_prompt: str = DEFAULT_SYSTEM_PROMPT, max_length: int | None = None,
                      extra_train: Sequence[dict] = (), repeats: Sequence[int] | None = None,
                      num_proc: int | None = None, cache_dir: str | Path | None = None):
    """-> (datasets.DatasetDict with "train"/"test" of input_ids/labels/completion_mask/track_id, counts dict,
    the user requests of the training examples).

    `extra_train`: more prompt/completion examples for training (recipes.sft.tasks). With `cache_dir`, the tokenized
    dataset is kept under a key of everything it depends on and reused by later runs. The tokenizer must already
    hold the music tokens (tokenizer_ext.vocab.add_music_tokens)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    rows, per_file = mixed_dqt_rows(as_paths(dqt_path), repeats)
    examples = build_examples(rows, db, system_prompt)
    examples["train"] += list(extra_train)
    counts = {name: len(examples[name]) for name in ("train", "test")}
    counts.update(skipped_unknown_track=examples["skipped_unknown_track"], dqt_files=per_file,
                  extra_train=len(extra_train))
    requests = [ex["query"] for ex in examples["train"]]
    key = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps([[ex["prompt"], ex["completion"], ex["track_id"]] for name in
                                            ("train", "test") for ex in examples[name]]).encode())
        tokenizer_key = [tokenizer.name_or_path, len(tokenizer), tokenizer.chat_template, max_length]
        digest.update(json.dumps(tokenizer_key).encode())
        key = Path(cache_dir) / digest.hexdigest()[:16]
        if (key / "dataset_dict.json").exists():
            return load_from_disk(str(key)), counts, requests
    splits = {}
    for name in ("train", "test"):
        if examples[name]:
            plain = [{"prompt": ex["prompt"], "completion": ex["completion"], "track_id": ex["track_id"]}
                     for ex in examples[name]]
            splits[name] = Dataset.from_list(plain).map(
                _tokenize_example, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                remove_columns=["prompt", "completion"], num_proc=num_proc if len(plain) > 5000 else None,
                desc=f"tokenizing {name}")
    dataset = DatasetDict(splits)
    if key is not None:
        tmp = key.with_name(key.name + f".tmp{os.getpid()}")
        dataset.save_to_disk(str(tmp))
        os.replace(tmp, key) if not key.exists() else shutil.rmtree(tmp, ignore_errors=True)
    return dataset, counts, requests
