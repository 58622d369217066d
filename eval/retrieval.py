"""Generated token sequences -> top-k catalog tracks, by hierarchical matching with per-modality weights.

One generated sequence (a beam) is parsed back into codes and scored against every track with the prefix index of
the tokenizer evaluation (`eval.matching.HierarchicalIndex`): score = sum over modalities of w_m x (number of shared
code prefixes). Several beams are merged by their generation probabilities: score(t) = sum_b p_b x score_b(t), with
p_b the softmax of the beams' sequence log-probabilities, so the top beam leads and later beams break its ties and
fill its gaps. The modality weights come from the modality-relevance model (3MTokenRec's modality selection) or are
all 1 (the ablation). Ties: higher score first, then lower catalog row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval.matching import HierarchicalIndex, top_k
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import BEGIN_TOKEN, END_TOKEN, tokens_to_codes


def answer_tokens(token_strings: Sequence[str]) -> list[str] | None:
    """The tokens between `<begin_3MToken>` and `<end_3MToken>` (None when either boundary is missing)."""
    toks = list(token_strings)
    if BEGIN_TOKEN not in toks:
        return None
    body = toks[toks.index(BEGIN_TOKEN) + 1:]
    if END_TOKEN not in body:
        return None
    return body[:body.index(END_TOKEN)]


def parse_sequence(token_strings: Sequence[str], db: TokenDB) -> tuple[dict[str, list[int]], int | None] | None:
    """Generated token strings -> ({group: codes}, dedup) when they form a well-formed track ID of `db`, else None.

    Well-formed: boundaries present; every group of the database, in order, with all its levels or `<MOD-none>`;
    `<ID-k>` only after the last group."""
    body = answer_tokens(token_strings)
    if body is None:
        return None
    levels = {m: len(s) for m, s in db.codebook_sizes.items()}
    try:
        codes, dedup = tokens_to_codes(body, levels)
    except (ValueError, KeyError):
        return None
    if list(codes) != list(db.modalities):
        return None
    for m, c in codes.items():
        sizes = db.codebook_sizes[m]
        if c[0] >= 0 and any(not 0 <= x < k for x, k in zip(c, sizes)):
            return None
    return codes, dedup


def is_catalog_prefix(codes: Mapping[str, Sequence[int]], db: TokenDB, dedup: int | None = None,
                      per_modality: bool = False) -> bool:
    """Does a parsed sequence exist in the catalog: as a whole track ID (default), or modality by modality?"""
    mask = np.ones(db.num_tracks, dtype=bool)
    for m in db.modalities:
        hit = (db.codes[m] == np.asarray(codes[m])[None, :]).all(axis=1)
        if per_modality:
            if not hit.any():
                return False
        else:
            mask &= hit
    if per_modality:
        return True
    if dedup is not None:
        mask &= (db.dedup == dedup) if db.dedup is not None else False
    return bool(mask.any())


@dataclass
class Retrieved:
    rows: np.ndarray               # int64 [k'] catalog rows, best first
    scores: np.ndarray             # float64 [k']
    matched: list[list[str]]       # per returned track: the groups whose level-1 code it shares with the top beam


class Retriever:
    """Token database + prefix index; generated sequences -> top-k tracks."""

    def __init__(self, db: TokenDB, index: HierarchicalIndex | None = None):
        self.db = db
        self.index = index or HierarchicalIndex.from_token_db(db)

    def retrieve(self, beams: Sequence[Sequence[str]], beam_logprobs: Sequence[float] | None = None,
                 weights: Mapping[str, float] | None = None, k: int = 10) -> Retrieved:
        """Token strings of one or several beams (best first) -> top-k tracks. Malformed beams are skipped."""
        parsed = [parse_sequence(b, self.db) for b in beams]
        keep = [i for i, p in enumerate(parsed) if p is not None]
        if not keep:
            return Retrieved(np.zeros(0, np.int64), np.zeros(0), [])
        if beam_logprobs is None:
            probs = np.zeros(len(keep))
            probs[0] = 1.0  # without probabilities only the best well-formed beam counts
        else:
            lp = np.asarray([beam_logprobs[i] for i in keep], dtype=np.float64)
            probs = np.exp(lp - lp.max())
            probs /= probs.sum()
        if len(keep) == 1 or np.count_nonzero(probs) == 1:
            codes = parsed[keep[int(np.argmax(probs))]][0]
            rows, scores = self.index.search_codes(codes, weights, k=k)
        else:
            total = np.zeros(self.db.num_tracks)
            for i, p in zip(keep, probs):
                if p > 0:
                    total += p * self.index.score_codes(parsed[i][0], weights)
            rows = top_k(total[None, :], k)[0]
            scores = total[rows]
        top_codes = parsed[keep[int(np.argmax(probs))]][0]
        matched = [[m for m in self.db.modalities
                    if top_codes[m][0] >= 0 and self.db.codes[m][r, 0] == top_codes[m][0]] for r in rows]
        return Retrieved(np.asarray(rows, np.int64), np.asarray(scores, np.float64), matched)


def modality_weights(scores: Sequence[float] | np.ndarray, modalities: Sequence[str]) -> dict[str, float]:
    """One row of relevance-model scores (nine, registry order, 0..10) -> {modality: weight} for the given groups.

    Groups that are not input modalities (joint codes of other quantizers) get the mean weight."""
    from data_gen.registry import MODALITY_NAMES

    s = np.asarray(scores, dtype=np.float64)
    named = dict(zip(MODALITY_NAMES, s))
    mean = float(np.mean([named[m] for m in modalities if m in named])) if any(m in named for m in modalities) \
        else 1.0
    return {m: float(named.get(m, mean)) for m in modalities}
