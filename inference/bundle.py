"""Load an inference bundle (a 3MTokenRec SFT output directory or Hub repo) -> model, extended tokenizer, token
database and bundle config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recipes.sft.bundle import BUNDLE_DIR
from tokenizer_ext.token_db import TokenDB


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
