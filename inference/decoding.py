"""Logit-masked decoding: a `transformers` LogitsProcessor that lets the LLM emit only well-formed track IDs.

An answer is `<begin_3MToken>`, each code group in token-database order (L level tokens or `<MOD-none>`), `<ID-k>`
when the database disambiguates, `<end_3MToken>`, end of turn. Modes: `order` (the paper's: any code of the due
(modality, level)), `modality` (each modality's code prefix exists in the catalog), `catalog` (the whole prefix is
a catalog track's). All are one token automaton with transitions as sorted keys `state * V + token`, replayed with
one `searchsorted` per generated position: no Python loop over beams, vocabulary or catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor

from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import BEGIN_TOKEN, END_TOKEN, MISSING, dedup_token, missing_token, music_token

MODES = ("order", "modality", "catalog")
DENSE_MASK_MAX_BYTES = 64 << 20  # precompute dense [states, V] masks when they fit in this


@dataclass
class TokenAutomaton:
    """States and transitions over token ids. State 0 expects `<begin_3MToken>`; `done` allows only end-of-turn."""

    vocab_size: int
    keys: np.ndarray        # int64 [E] sorted: state * vocab_size + token
    targets: np.ndarray     # int64 [E] next state
    num_states: int
    dead: int               # reached by a token the automaton does not allow (only end-of-turn is allowed next)

    def __post_init__(self):
        order = np.argsort(self.keys, kind="stable")
        self.keys, self.targets = self.keys[order], self.targets[order]
        if len(self.keys) and (np.diff(self.keys) == 0).any():
            raise ValueError("automaton has two transitions for one (state, token)")
        states = np.arange(self.num_states + 1, dtype=np.int64) * self.vocab_size
        self.indptr = np.searchsorted(self.keys, states)  # state s allows keys[indptr[s]:indptr[s+1]]
        self._keys_t = torch.from_numpy(self.keys)
        self._targets_t = torch.from_numpy(self.targets)
        self._indptr_t = torch.from_numpy(self.indptr)
        self._tokens_t = torch.from_numpy(self.keys % self.vocab_size)
        self._dense = None
        if self.num_states * self.vocab_size <= DENSE_MASK_MAX_BYTES:
            dense = torch.zeros(self.num_states, self.vocab_size, dtype=torch.bool)
            dense[torch.from_numpy(self.keys // self.vocab_size), self._tokens_t] = True
            self._dense = dense

    def allowed(self, state: int) -> np.ndarray:
        """Token ids state `state` allows (sorted)."""
        return self.keys[self.indptr[state]:self.indptr[state + 1]] % self.vocab_size

    def step(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """int64 [B] states x int64 [B] tokens -> next states (`dead` where the token is not allowed)."""
        if len(self._keys_t) == 0:
            return torch.full_like(states, self.dead)
        key = states * self.vocab_size + tokens
        idx = torch.searchsorted(self._keys_t, key).clamp_(max=len(self._keys_t) - 1)
        ok = self._keys_t[idx] == key
        return torch.where(ok, self._targets_t[idx], torch.full_like(states, self.dead))

    def run(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 [B, T] generated tokens (from the first answer token) -> int64 [B] states after them."""
        states = torch.zeros(tokens.shape[0], dtype=torch.int64)
        for t in range(tokens.shape[1]):
            states = self.step(states, tokens[:, t])
        return states

    def mask(self, states: torch.Tensor) -> torch.Tensor:
        """int64 [B] states -> bool [B, V] allowed tokens."""
        if self._dense is not None:
            return self._dense[states]
        starts, ends = self._indptr_t[states], self._indptr_t[states + 1]
        counts = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(states)), counts)
        # position of each allowed token inside the keys: start of its row + its rank within the row
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        out = torch.zeros(len(states), self.vocab_size, dtype=torch.bool)
        out[rows, self._tokens_t[torch.repeat_interleave(starts, counts) + offsets]] = True
        return out


class _Builder:
    """Collects transitions; states are allocated on demand."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.src: list[np.ndarray] = []
        self.tok: list[np.ndarray] = []
        self.dst: list[np.ndarray] = []
        self.num_states = 0

    def new_states(self, n: int) -> np.ndarray:
        out = np.arange(self.num_states, self.num_states + n, dtype=np.int64)
        self.num_states += n
        return out

    def add(self, src, tok, dst) -> None:
        src, tok, dst = (np.asarray(a, dtype=np.int64) for a in (src, tok, dst))
        src, tok, dst = np.broadcast_arrays(src, tok, dst)
        self.src.append(src.ravel())
        self.tok.append(tok.ravel())
        self.dst.append(dst.ravel())

    def build(self, dead: int) -> TokenAutomaton:
        src, tok, dst = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (self.src, self.tok, self.dst))
        return TokenAutomaton(self.vocab_size, src * self.vocab_size + tok, dst, self.num_states, dead)


def _token_ids(tokenizer, tokens: Sequence[str]) -> np.ndarray:
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    unk = getattr(tokenizer, "unk_token_id", None)
    bad = [t for t, i in zip(tokens, ids) if i is None or (unk is not None and i == unk and t != tokenizer.unk_token)]
    if bad:
        raise KeyError(f"{len(bad)} music tokens are not in the tokenizer's vocabulary, e.g. {bad[:3]}: "
                       "was the vocabulary extended with this token database?")
    return np.asarray(ids, dtype=np.int64)


def _trie(b: _Builder, start: np.ndarray, seqs: np.ndarray, ends: np.ndarray) -> None:
    """Add a trie of token-id rows to the builder: row r starts at state start[r] and its token sequence seqs[r]
    (padded with -1) ends at state ends[r]. Rows that share a start and a prefix share the prefix's states."""
    n, width = seqs.shape
    lengths = (seqs >= 0).sum(axis=1)
    state = start.astype(np.int64).copy()
    for d in range(width):
        live = np.flatnonzero(lengths > d)
        if len(live) == 0:
            break
        last = lengths[live] == d + 1
        inner = live[~last]
        # states after d+1 tokens for rows that go on: one per distinct (state, token) pair
        if len(inner):
            pairs = np.stack([state[inner], seqs[inner, d]], axis=1)
            uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
            new = b.new_states(len(uniq))
            b.add(uniq[:, 0], uniq[:, 1], new)
            state[inner] = new[inverse.reshape(-1)]
        done = live[last]
        if len(done):
            pairs = np.unique(np.stack([state[done], seqs[done, d], ends[done]], axis=1), axis=0)
            if len(np.unique(pairs[:, :2], axis=0)) != len(pairs):
                raise ValueError("two rows with the same tokens end in different states")
            b.add(pairs[:, 0], pairs[:, 1], pairs[:, 2])
        # a row that ends must not also go on through the same (state, token): impossible with fixed-shape groups


def build_automaton(db: TokenDB, tokenizer, mode: str = "order", end_of_turn: Sequence[int] | int | None = None,
                    vocab_size: int | None = None) -> TokenAutomaton:
    """The automaton of a token database's sequences in `mode` ('order', 'modality' or 'catalog').

    `end_of_turn`: token id(s) allowed after `<end_3MToken>` (default: the tokenizer's eos token). `vocab_size`:
    the model's logits width (>= len(tokenizer); the embedding matrix may be padded)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    vocab_size = int(vocab_size or len(tokenizer))
    if end_of_turn is None:
        end_of_turn = tokenizer.eos_token_id
    eot = np.atleast_1d(np.asarray(end_of_turn, dtype=np.int64))
    begin, end = _token_ids(tokenizer, [BEGIN_TOKEN, END_TOKEN])
    b = _Builder(vocab_size)
    start, body = b.new_states(2)
    b.add(start, begin, body)
    end_wait, done, dead = b.new_states(3)  # expects <end_3MToken>; expects end-of-turn; after a disallowed token
    b.add(end_wait, end, done)
    b.add(done, eot, done)  # end-of-turn stops generation; if the caller continues, it may only repeat it
    b.add(dead, eot, dead)
    max_dedup = int(db.dedup.max()) + 1 if db.dedup is not None and len(db.dedup) else 0
    groups = db.modalities

    if mode == "catalog":
        seqs = _catalog_sequences(db, tokenizer)
        if max_dedup:  # with <ID-k> every sequence is unique and ends at the dedup token
            dedup_ids = _token_ids(tokenizer, [dedup_token(k) for k in range(max_dedup)])
            seqs = np.concatenate([seqs, dedup_ids[db.dedup][:, None]], axis=1)
        _trie(b, np.full(len(seqs), body), _right_align_pad(seqs), np.full(len(seqs), end_wait))
        return b.build(dead)

    # 'order' and 'modality': one segment of states per code group, chained: group g's end is group g+1's start
    entry = body
    for gi, m in enumerate(groups):
        sizes = db.codebook_sizes[m]
        last_group = gi == len(groups) - 1
        exit_state = (b.new_states(1)[0] if max_dedup else end_wait) if last_group else b.new_states(1)[0]
        has_missing = bool((db.codes[m][:, 0] == MISSING).any())
        none_id = _token_ids(tokenizer, [missing_token(m)])[0] if has_missing else None
        if mode == "order":
            level_states = np.r_[entry, b.new_states(len(sizes) - 1), exit_state]
            for level, size in enumerate(sizes, start=1):
                ids = _token_ids(tokenizer, [music_token(m, level, i) for i in range(size)])
                b.add(level_states[level - 1], ids, level_states[level])
            if none_id is not None:
                b.add(entry, none_id, exit_state)
        else:
            codes = db.codes[m]
            present = np.unique(codes[codes[:, 0] != MISSING], axis=0)
            level_ids = [_token_ids(tokenizer, [music_token(m, level, i) for i in range(size)])
                         for level, size in enumerate(sizes, start=1)]
            seqs = np.stack([level_ids[level][present[:, level]] for level in range(len(sizes))], axis=1) \
                if len(present) else np.zeros((0, len(sizes)), np.int64)
            _trie(b, np.full(len(seqs), entry), seqs, np.full(len(seqs), exit_state))
            if none_id is not None:
                b.add(entry, none_id, exit_state)
        entry = exit_state
    if max_dedup:
        b.add(entry, _token_ids(tokenizer, [dedup_token(k) for k in range(max_dedup)]), end_wait)
    return b.build(dead)


def _catalog_sequences(db: TokenDB, tokenizer) -> np.ndarray:
    """int64 [N, W] token ids of every track's body (no boundaries, no dedup), padded with -1 on the right."""
    parts, widths = [], []
    for m in db.modalities:
        codes = db.codes[m]
        sizes = db.codebook_sizes[m]
        missing = codes[:, 0] == MISSING
        ids = np.full(codes.shape, -1, dtype=np.int64)
        for level, size in enumerate(sizes):
            table = _token_ids(tokenizer, [music_token(m, level + 1, i) for i in range(size)])
            ids[~missing, level] = table[codes[~missing, level]]
        if missing.any():
            ids[missing, 0] = _token_ids(tokenizer, [missing_token(m)])[0]
        parts.append(ids)
        widths.append(codes.shape[1])
    return np.concatenate(parts, axis=1) if parts else np.zeros((db.num_tracks, 0), np.int64)


def _right_align_pad(seqs: np.ndarray) -> np.ndarray:
    """Move the -1 holes left by `<MOD-none>` (1 token instead of L) to the end of each row, keeping token order."""
    keep = seqs >= 0
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(seqs, order, axis=1)
    out[~np.take_along_axis(keep, order, axis=1)] = -1
    return out


class MusicTokenLogitsProcessor(LogitsProcessor):
    """Masks the logits so that the answer follows the automaton (use one instance per `generate` call).

    The prompt length is taken from the first call (all rows share it: left padding), or given explicitly."""

    def __init__(self, automaton: TokenAutomaton, prompt_length: int | None = None):
        self.automaton = automaton
        self.prompt_length = prompt_length

    def states(self, input_ids: torch.LongTensor) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        return self.automaton.run(input_ids[:, self.prompt_length:].cpu())

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = self.automaton.mask(self.states(input_ids))
        if allowed.shape[1] < scores.shape[1]:  # logits wider than the automaton's vocabulary: pad rows disallowed
            allowed = torch.nn.functional.pad(allowed, (0, scores.shape[1] - allowed.shape[1]))
        allowed = allowed[:, :scores.shape[1]].to(scores.device)
        return scores.masked_fill(~allowed, float("-inf"))
