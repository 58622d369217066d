"""Load an inference bundle (a 3MTokenRec SFT output directory or Hub repo) -> model, extended tokenizer, token
database and bundle config.

A name that looks like a local path (it is not a valid Hub id, starts with `.`, `/` or `~`, or its first folder
exists here) is only ever read from disk; any other name is a Hub id. Both failures raise BundleNotFoundError with a
one-line message, so that commands can print it without a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recipes.sft.bundle import BUNDLE_DIR
from tokenizer_ext.token_db import TokenDB


class BundleNotFoundError(FileNotFoundError):
    """No bundle at a local path, an unreachable Hub id, or a directory that is not a bundle."""


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


def looks_local(name_or_path: str | Path) -> bool:
    """Is this meant as a path on this machine rather than a Hub id ('owner/name')?"""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.startswith((".", "/", "~", "\\")) or Path(text).exists():
        return True
    parts = Path(text).parts
    if parts and Path(parts[0]).exists():
        return True  # `runs/x` where runs/ is here: a typo in a local path, not a Hub id
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False


def resolve_bundle_path(name_or_path: str | Path, revision: str | None = None) -> Path:
    """Bundle directory or Hub id -> local directory (downloaded for a Hub id)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if looks_local(name_or_path):
        what = "is a file, not a directory" if path.exists() else "no such directory"
        raise BundleNotFoundError(f"bundle {name_or_path}: {what} (a bundle is the output_dir of "
                                  "recipes/sft_3mtoken.py; Hub ids have the form owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(name_or_path), revision=revision))
    except Exception as err:  # offline, unknown repo, gated, HTTP errors: one line says which
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise BundleNotFoundError(f"bundle {name_or_path}: not a local directory, and the Hub repo could not be "
                                  f"fetched ({type(err).__name__}: {reason})") from err


def load_bundle(name_or_path: str | Path, revision: str | None = None, load_model: bool = True,
                **model_kwargs) -> Bundle:
    """Directory or Hub id -> Bundle(model, extended tokenizer, token DB, bundle config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_bundle_path(name_or_path, revision)
    if not (path / BUNDLE_DIR / "bundle.json").exists():
        raise BundleNotFoundError(f"bundle {path}: not a 3MTokenRec bundle (no {BUNDLE_DIR}/bundle.json)")
    config = json.loads((path / BUNDLE_DIR / "bundle.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs) if load_model else None
    return Bundle(path, model, tokenizer, TokenDB.load(path / BUNDLE_DIR), config)
