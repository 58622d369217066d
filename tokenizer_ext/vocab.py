"""Vocabulary extension: a Hugging Face tokenizer + causal LM -> the same with the music tokens added.

Every music, `<MOD-none>`, `<ID-k>` and boundary token becomes exactly one token. The embedding matrix grows
(optionally padded to a multiple of 64); old rows stay bit-identical, new rows start at the mean of the old ones (a
neutral first logit), optionally with small seeded noise. Tied embeddings stay tied; ZeRO-3 shards are gathered first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from tokenizers import AddedToken


def add_music_tokens(tokenizer, tokens: Sequence[str]) -> int:
    """Add tokens (as non-special, unnormalised added tokens so they survive `decode`); returns how many were new."""
    present = set(tokenizer.get_vocab())
    new = [t for t in dict.fromkeys(tokens) if t not in present]
    added = tokenizer.add_tokens([AddedToken(t, normalized=False, special=False, single_word=False,
                                             lstrip=False, rstrip=False) for t in new])
    for t in new:  # the contract of the whole pipeline: one token each
        ids = tokenizer.encode(t, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"{t!r} encodes to {len(ids)} tokens after extension")
    return added


def _gathered(params: list[torch.nn.Parameter]):
    """Gather ZeRO-3-partitioned parameters for a write on rank 0 (no-op without ZeRO-3)."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    if is_deepspeed_zero3_enabled():
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return contextlib.nullcontext()


def _init_new_rows(weight: torch.Tensor, old_rows: int, noise_std: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        old = weight[:old_rows].float()
        mean = old.mean(dim=0)
        new = mean.expand(weight.shape[0] - old_rows, -1).clone()
        if noise_std > 0:
            scale = old.std(dim=0) * noise_std
            new += torch.randn(new.shape, generator=generator) * scale
        weight[old_rows:] = new.to(weight.dtype)


def _rows(param: torch.nn.Parameter) -> int:
    """Rows of an embedding matrix, also when ZeRO-3 has partitioned it (its local tensor is then empty)."""
    return int(getattr(param, "ds_shape", param.shape)[0])


def _init_rows_from_text(weight: torch.Tensor, rows: dict[int, list[int]], old_rows: int) -> int:
    """Row r <- the mean of the old rows of its text's token ids (ids of new tokens are ignored) -> rows set."""
    done = 0
    with torch.no_grad():
        for row, ids in rows.items():
            ids = [i for i in ids if i < old_rows]
            if ids:
                weight[row] = weight[ids].float().mean(dim=0).to(weight.dtype)
                done += 1
    return done


def text_token_ids(tokenizer, texts: Mapping[str, str]) -> dict[int, list[int]]:
    """{token: text} -> {token id: ids of the text} for the tokens the tokenizer knows."""
    vocab = tokenizer.get_vocab()
    return {vocab[t]: tokenizer.encode(text, add_special_tokens=False) for t, text in texts.items() if t in vocab}


def extend_model_vocabulary(model, tokenizer, tokens: Sequence[str], pad_to_multiple_of: int | None = 64,
                            init_noise_std: float = 0.0, seed: int = 0,
                            init_texts: Mapping[str, str] | None = None) -> dict:
    """Add `tokens` to the tokenizer, resize and initialise the model's embeddings; returns a summary dict."""
    old_len = len(tokenizer)
    old_rows = _rows(model.get_input_embeddings().weight)
    added = add_music_tokens(tokenizer, tokens)
    target = len(tokenizer)
    if pad_to_multiple_of:
        target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
    target = max(target, old_rows)  # never shrink a model whose matrix was already padded
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if target != old_rows:
        model.resize_token_embeddings(target, mean_resizing=False)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    generator = torch.Generator().manual_seed(seed)
    first_new = min(old_len, old_rows)  # rows from here on belong to no trained token (new or padding)
    text_rows = text_token_ids(tokenizer, init_texts) if init_texts else {}
    from_text = 0
    with _gathered([emb] + ([head.weight] if head is not None and not tied else [])):
        if target > first_new:
            _init_new_rows(emb.data, first_new, init_noise_std, generator)
            from_text = _init_rows_from_text(emb.data, text_rows, first_new)
            if head is not None and not tied and head.weight is not emb:
                _init_new_rows(head.weight.data, first_new, init_noise_std, generator)
                _init_rows_from_text(head.weight.data, text_rows, first_new)
    if tied:
        model.tie_weights()
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            raise RuntimeError("input and output embeddings are no longer tied after resizing")
    model.config.vocab_size = _rows(model.get_input_embeddings().weight)
    return {"tokens_before": old_len, "tokens_added": added, "tokens_after": len(tokenizer),
            "embedding_rows_before": old_rows, "embedding_rows_after": model.config.vocab_size, "tied": tied,
            "rows_from_text": from_text}
