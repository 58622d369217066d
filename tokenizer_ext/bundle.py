"""The inference bundle: a trained 3MTokenRec output directory (or Hub repo) -> everything retrieval needs.

Layout added next to the model and the extended tokenizer:
    music3m/token_db.parquet, token_db.json, vocabulary.txt     the token database (track_id -> codes)
    music3m/tokenizer/...                                        the music tokenizer (to encode new tracks)
    music3m/bundle.json                                          system prompt, modality order/levels, counts
`load_bundle` rebuilds it from a local directory or a Hub repo id (downloaded with huggingface_hub).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tokenizer_ext.token_db import DB_FILE, META_FILE, TokenDB
from tokenizer_ext.tokens import GROUP_NAMES

BUNDLE_DIR = "music3m"
_TOKENIZER_FILES_SKIP = {DB_FILE, META_FILE, "vocabulary.txt"}


def save_bundle_extras(output_dir: str | Path, token_db_dir: str | Path, system_prompt: str, **info) -> Path:
    """Copy the token database and the music tokenizer into output_dir/music3m and write bundle.json."""
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
              "levels": {m: len(s) for m, s in db.codebook_sizes.items()}, "tokenizer": db.tokenizer, **info}
    (out / "bundle.json").write_text(json.dumps(bundle, indent=2, default=str) + "\n")
    return out


@dataclass
class Bundle:
    path: Path
    model: object
    tokenizer: object
    token_db: TokenDB
    config: dict

    def music_tokenizer(self):
        """The per-modality quantizers, to encode tracks added after training."""
        from tokenizer_ext.tokenizer import MusicTokenizer

        return MusicTokenizer.load(self.path / BUNDLE_DIR / "tokenizer")


def resolve_bundle_path(name_or_path: str | Path, revision: str | None = None) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=str(name_or_path), revision=revision))


def load_bundle(name_or_path: str | Path, revision: str | None = None, load_model: bool = True, **model_kwargs) -> Bundle:
    """Directory or Hub id -> Bundle(model, extended tokenizer, token DB, bundle config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_bundle_path(name_or_path, revision)
    if not (path / BUNDLE_DIR / "bundle.json").exists():
        raise FileNotFoundError(f"{path}: not a 3MTokenRec bundle (no {BUNDLE_DIR}/bundle.json)")
    config = json.loads((path / BUNDLE_DIR / "bundle.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs) if load_model else None
    return Bundle(path, model, tokenizer, TokenDB.load(path / BUNDLE_DIR), config)
