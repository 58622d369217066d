"""The inference bundle, written next to a trained 3MTokenRec model: everything retrieval needs besides the model.

    music3m/token_db.parquet, token_db.json, vocabulary.txt     the token database (track_id -> codes)
    music3m/tokenizer/...                                        the music tokenizer (to encode new tracks)
    music3m/bundle.json                                          system prompt, modality order/levels, counts
    music3m/train_requests.txt                                   the SFT requests, normalised (seen vs unseen)
Read back by inference.bundle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from common.records import normalize_request
from tokenizer_ext.token_db import DB_FILE, META_FILE, TokenDB
from tokenizer_ext.tokens import GROUP_NAMES

BUNDLE_DIR = "music3m"
TRAIN_REQUESTS = "train_requests.txt"
_TOKENIZER_FILES_SKIP = {DB_FILE, META_FILE, "vocabulary.txt"}


def read_train_requests(bundle_dir: str | Path) -> set[str] | None:
    """The normalised SFT requests saved with a bundle, or None for a bundle saved without them."""
    path = Path(bundle_dir) / BUNDLE_DIR / TRAIN_REQUESTS
    return set(path.read_text(encoding="utf-8").splitlines()) if path.exists() else None


def save_bundle_extras(output_dir: str | Path, token_db_dir: str | Path, system_prompt: str,
                       train_requests: Iterable[str] | None = None, **info) -> Path:
    """Copy the token database and the music tokenizer into output_dir/music3m, write bundle.json and the
    normalised training requests."""
    out = Path(output_dir) / BUNDLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    src = Path(token_db_dir)
    for name in (DB_FILE, META_FILE, "vocabulary.txt"):
        shutil.copy2(src / name, out / name)
    if (src / "tokenizer.json").exists():  # a trained music tokenizer lives in the same directory
        dst = out / "tokenizer"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in _TOKENIZER_FILES_SKIP
                                                           or n == "eval"])
    db = TokenDB.load(out)
    bundle = {"format": 1, "system_prompt": system_prompt, "modalities": list(db.modalities),
              "registry_order": list(GROUP_NAMES),  # joint groups (SH, MJ, FU) first, then modalities
              "levels": {m: len(s) for m, s in db.codebook_sizes.items()}, "tokenizer": db.tokenizer,
              "token_db_dir": str(token_db_dir), **info}
    if train_requests is not None:
        texts = sorted({normalize_request(t) for t in train_requests})
        (out / TRAIN_REQUESTS).write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    (out / "bundle.json").write_text(json.dumps(bundle, indent=2, default=str) + "\n")
    return out


def model_card(output_dir: str | Path, base_model: str, training: dict, evaluation: dict | None = None) -> str:
    """The README.md of a bundle: base model, training data (D_qt files and sizes), token database (tokenizer,
    modalities, tracks), evaluation figures when given, and how to load it and answer a request."""
    out = Path(output_dir)
    bundle = json.loads((out / BUNDLE_DIR / "bundle.json").read_text())
    db = TokenDB.load(out / BUNDLE_DIR)
    counts = bundle.get("sft_counts", {})
    name = out.name
    files = counts.get("dqt_files", {})
    data_rows = "\n".join(f"| `{path}` | {v['rows']:,} | {v['repeat']} |" for path, v in files.items()) or \
        "| (not recorded) | | |"
    tasks = counts.get("alignment_tasks") or {}
    method = db.tokenizer or "unknown"
    lines = [
        "---", f"base_model: {base_model}", "library_name: transformers",
        "tags: [3MTokenRec, generative-retrieval, music, music-recommendation]", "---", "",
        f"# {name}", "",
        f"A 3MTokenRec generative music retriever: [{base_model}](https://huggingface.co/{base_model}) fine-tuned to "
        "answer a listener's request with the semantic ID of a catalog track (`<begin_3MToken> ... <end_3MToken>`), "
        "then matched against the token database shipped in `music3m/`.", "",
        "## Training data", "",
        f"- Requests (D_qt): {counts.get('train', 0):,} training / {counts.get('test', 0):,} held-out examples.", "",
        "| D_qt file | rows | repeat per epoch |", "|---|---|---|", data_rows, "",
        f"- Alignment tasks: {', '.join(f'{k} ({v:,})' for k, v in tasks.items()) or 'none'}.",
        f"- Training: {', '.join(f'{k} {v}' for k, v in training.items())}.", "",
        "## Token database", "",
        f"- Tokenizer: {method}; code groups {', '.join(db.modalities)} "
        f"(levels {', '.join(str(len(s)) for s in db.codebook_sizes.values())}); {db.num_tracks:,} tracks; "
        f"{len(db.vocabulary()):,} tokens added to the vocabulary.", ""]
    if evaluation:
        lines += ["## Evaluation", "", *(f"- {k}: {v}" for k, v in evaluation.items()), ""]
    lines += [
        "## Usage", "", "```python", "from inference.recommend import Recommender", "",
        f'rec = Recommender.from_pretrained("{out}")',
        'print(rec.recommend(["play some 90s rock for a road trip"], k=5))', "```", "",
        "```bash", f"music3m-recommend --bundle {out} --query \"play some 90s rock for a road trip\" --k 5",
        f"music3m-serve --bundle {out}   # POST /recommend {{\"query\": ..., \"k\": 5}}, GET /health", "```", "",
        "Both come from the music3m-recipes repository (`pip install -e .` in a clone).", ""]
    text = "\n".join(lines)
    (out / "README.md").write_text(text)
    return text


def record_evaluation(output_dir: str | Path, title: str, lines: list[str]) -> None:
    """Put an evaluation into the bundle's model card: its '## Evaluation' section gains (or replaces) a subsection
    `title` with these lines."""
    card = Path(output_dir) / "README.md"
    if not card.exists():
        return
    text = card.read_text()
    block = f"### {title}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    head, sep, rest = text.partition("## Evaluation\n\n")
    if not sep:  # no section yet: it goes before the usage
        head, sep2, tail = text.partition("## Usage")
        card.write_text(f"{head}## Evaluation\n\n{block}\n{sep2}{tail}")
        return
    section, nxt, tail = rest.partition("\n## ")
    kept = [part for part in section.split("### ") if part.strip() and not part.startswith(f"{title}\n")]
    section = "".join(f"### {part}" for part in kept) + block
    card.write_text(f"{head}## Evaluation\n\n{section}{nxt}{tail}" if nxt else f"{head}## Evaluation\n\n{section}")

