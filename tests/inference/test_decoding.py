"""Logit-masked ordered decoding: every sampled answer is well-formed (order mode) and exists in the catalog
(catalog / modality modes), under sampling, greedy and beam search.

The 10,000-sequence checks use a word-level tokenizer holding a few words + the music vocabulary, so that sampling
10,000 answers costs seconds; the real SmolLM2 tokenizer (49k tokens) is checked on fewer sequences. The model is a
tiny randomly initialised Llama: with no learnt preference at all, every token the mask lets through is reachable,
which is the hardest case for the mask (a trained model is run through the same processor by eval.t2mr)."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inference.decoding import MusicTokenLogitsProcessor, build_automaton
from inference.retrieval import is_catalog_prefix, parse_sequence
from recipes.sft.model_utils import load_tokenizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import BEGIN_TOKEN, END_TOKEN
from tokenizer_ext.vocab import add_music_tokens


def _db(n=300, seed=0, dedup=True) -> TokenDB:
    rng = np.random.default_rng(seed)
    sizes = {"BM": (4, 4, 8), "SC": (8, 8, 8), "TC": (4, 8, 16)}
    codes = {}
    for m, s in sizes.items():
        # few distinct prefixes, as in a real catalog: level-2/3 codes depend on level 1
        c1 = rng.integers(0, s[0], n)
        c2 = (c1 * 3 + rng.integers(0, 2, n)) % s[1]
        c3 = (c2 * 5 + rng.integers(0, 3, n)) % s[2]
        codes[m] = np.stack([c1, c2, c3], axis=1)
    codes["TC"][rng.random(n) < 0.2] = -1  # missing consumption
    codes["BM"][:10] = codes["BM"][10:20]   # conflicts -> <ID-k>
    codes["SC"][:10] = codes["SC"][10:20]
    codes["TC"][:10] = codes["TC"][10:20]
    codes["TC"][0] = codes["SC"][0] = -1    # row 0's answer is 4 tokens shorter than the longest
    db = TokenDB([f"t{i}" for i in range(n)], sizes, codes)
    return db.with_disambiguation() if dedup else db


def _word_tokenizer(db: TokenDB):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<eos>", "<unk>", "play", "some", "90s", "rock"]
    vocab = {w: i for i, w in enumerate(words)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>")
    add_music_tokens(tok, db.vocabulary())
    return tok


def _tiny_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                        max_position_embeddings=256)).eval()


@pytest.fixture(scope="module")
def small():
    db = _db()
    tok = _word_tokenizer(db)
    return db, tok, _tiny_model(len(tok) + 7)


@pytest.fixture(scope="module")
def setup():
    db = _db()
    tok = load_tokenizer("smollm2")
    add_music_tokens(tok, db.vocabulary())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok) + 7, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256))
    model.generation_config.pad_token_id = tok.eos_token_id
    return db, tok, model.eval()


def _generate(model, tok, automaton, n, batch, **kwargs):
    prompt = tok("play some 90s rock", return_tensors="pt", add_special_tokens=False).input_ids
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        ids = prompt.expand(b, -1)
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                             logits_processor=[MusicTokenLogitsProcessor(automaton)],
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, **kwargs)
        out += [tok.convert_ids_to_tokens(row[ids.shape[1]:]) for row in gen]
    return out


def _strip(tokens, tok):
    return [t for t in tokens if t != tok.eos_token]


@pytest.mark.parametrize("mode", ["order", "modality", "catalog"])
def test_10000_sampled_sequences_are_well_formed(small, mode):
    db, tok, model = small
    automaton = build_automaton(db, tok, mode, vocab_size=model.config.vocab_size)
    torch.manual_seed(1)
    seqs = _generate(model, tok, automaton, 10_000, 5_000, do_sample=True, top_k=0, top_p=1.0)
    parsed = [parse_sequence(_strip(s, tok), db) for s in seqs]
    assert all(p is not None for p in parsed)                                     # 100% well-formed
    assert all(s[0] == BEGIN_TOKEN and END_TOKEN in s for s in seqs)
    assert all(s[s.index(END_TOKEN) + 1] == tok.eos_token for s in seqs)          # then end of turn
    if mode == "catalog":
        assert all(is_catalog_prefix(c, db, d) for c, d in parsed)               # 100% exist as whole IDs
    elif mode == "modality":
        assert all(is_catalog_prefix(c, db, per_modality=True) for c, _ in parsed)
    else:  # order only: the random model does leave the catalog, so the test can see the difference
        assert not all(is_catalog_prefix(c, db, d) for c, d in parsed)
    # the mask does not collapse the choices: in catalog mode sampling reaches every one of the 300 track IDs (and
    # nothing else); the looser modes reach many more sequences than the catalog holds
    distinct = {tuple(_strip(s, tok)) for s in seqs}
    if mode == "catalog":
        assert distinct == {tuple(db.tokens(r)) for r in range(db.num_tracks)}
    else:
        assert len(distinct) > 1000


@pytest.mark.parametrize("mode", ["order", "catalog"])
def test_real_tokenizer_sampling_beams_and_greedy(setup, mode):
    db, tok, model = setup
    automaton = build_automaton(db, tok, mode, vocab_size=model.config.vocab_size)
    torch.manual_seed(2)
    sampled = _generate(model, tok, automaton, 64, 64, do_sample=True, top_k=0, top_p=1.0)
    beams = _generate(model, tok, automaton, 8, 2, num_beams=4, num_return_sequences=4, do_sample=False)
    greedy = _generate(model, tok, automaton, 2, 2, do_sample=False)
    for s in sampled + beams + greedy:
        parsed = parse_sequence(_strip(s, tok), db)
        assert parsed is not None
        assert mode == "order" or is_catalog_prefix(parsed[0], db, parsed[1])


def test_mask_allows_exactly_the_due_tokens(setup):
    db, tok, _ = setup
    a = build_automaton(db, tok, "order")
    ids = tok.convert_tokens_to_ids
    begin = ids(BEGIN_TOKEN)
    assert list(a.allowed(0)) == [begin]
    state = a.step(torch.tensor([0]), torch.tensor([begin]))
    allowed = set(tok.convert_ids_to_tokens(a.allowed(int(state))))
    assert allowed == {f"<BM1-{i}>" for i in range(4)}  # BM level 1, no <BM-none> (none missing)
    # TC has missing rows: after SC's last level, TC level 1 or <TC-none>
    row = db.tokens(25, boundaries=False)
    seq = [begin] + ids(row[:row.index(next(t for t in row if t.startswith("<TC")))])
    s = a.run(torch.tensor([seq]))
    allowed = set(tok.convert_ids_to_tokens(a.allowed(int(s))))
    assert allowed == {f"<TC1-{i}>" for i in range(4)} | {"<TC-none>"}
    # the catalog automaton's dense and sparse masks agree
    c = build_automaton(db, tok, "catalog")
    states = torch.cat([c.run(torch.tensor([seq])), c.run(torch.tensor([seq[:3]]))])
    assert c._dense is None
    sparse = c.mask(states)
    for r, st in enumerate(states.tolist()):
        assert sorted(torch.nonzero(sparse[r]).ravel().tolist()) == sorted(c.allowed(st).tolist())


def test_catalog_mode_first_level_only_offers_existing_codes(setup):
    db, tok, _ = setup
    c = build_automaton(db, tok, "catalog")
    begin = tok.convert_tokens_to_ids(BEGIN_TOKEN)
    state = c.step(torch.tensor([0]), torch.tensor([begin]))
    offered = set(tok.convert_ids_to_tokens(c.allowed(int(state))))
    assert offered == {f"<BM1-{int(x)}>" for x in np.unique(db.codes["BM"][:, 0])}


def test_unknown_tokens_fail_clearly():
    db = _db(dedup=False)
    tok = load_tokenizer("smollm2")  # not extended
    with pytest.raises(KeyError, match="not in the tokenizer's vocabulary"):
        build_automaton(db, tok, "order")
