"""Generated token sequences (beams) -> top-k catalog tracks, by hierarchical matching with per-modality weights.

Each beam is parsed back into codes and scored with `inference.matching.HierarchicalIndex`; beams are merged as
score(t) = sum_b p_b x score_b(t), p_b the softmax of their log-probabilities, so the top beam leads and later beams
break its ties. The weights come from the modality-relevance model, or are all 1 (the ablation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from inference.matching import HierarchicalIndex, top_k
from inference.neighbours import ContentSpace
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


RANKINGS = ("match", "beams", "neighbours")


class Retriever:
    """Token database + prefix index; generated sequences -> top-k tracks.

    ranking "match" (3MTokenRec): the tracks with the best merged hierarchical-matching scores. "beams": the exact
    tracks of the well-formed beams first, in beam order (with the catalog mask every beam is one catalog track, so
    k beams give k distinct tracks), then the best-matching other tracks. "neighbours": the tracks whose content is
    nearest to what the beams' codes stand for (`inference.neighbours`; needs `content`)."""

    def __init__(self, db: TokenDB, index: HierarchicalIndex | None = None, content: ContentSpace | None = None):
        self.db = db
        self.index = index or HierarchicalIndex.from_token_db(db)
        self.content = content
        self._exact: dict[tuple, int] | None = None

    def exact_row(self, codes: Mapping[str, Sequence[int]], dedup: int | None) -> int | None:
        """The catalog row whose whole ID is `codes` (+ `<ID-k>`), or None."""
        if self._exact is None:
            full = self.db.full_codes()
            dd = self.db.dedup if self.db.dedup is not None else np.zeros(len(full), np.int64)
            self._exact = {}
            for row in range(len(full) - 1, -1, -1):  # the first row wins where IDs repeat without <ID-k>
                self._exact[(*full[row].tolist(), int(dd[row]))] = row
        key = (*[int(x) for m in self.db.modalities for x in codes[m]], int(dedup or 0))
        return self._exact.get(key)

    def retrieve(self, beams: Sequence[Sequence[str]], beam_logprobs: Sequence[float] | None = None,
                 weights: Mapping[str, float] | None = None, k: int = 10, ranking: str = "match",
                 beam_temperature: float = 1.0) -> Retrieved:
        """Token strings of one or several beams (best first) -> top-k tracks. Malformed beams are skipped.

        Beams are merged with p_b = softmax(logprob_b / beam_temperature): 1 is the generation's own distribution,
        larger values flatten it towards a vote of the beams (inf: every beam counts the same)."""
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        if ranking == "neighbours" and self.content is None:
            raise ValueError("ranking 'neighbours' needs content vectors: Retriever(db, content=ContentSpace.from_run("
                             "run_dir, db.track_ids, content_modalities(db)))")
        parsed = [parse_sequence(b, self.db) for b in beams]
        keep = [i for i, p in enumerate(parsed) if p is not None]
        if not keep:
            return Retrieved(np.zeros(0, np.int64), np.zeros(0), [])
        if beam_logprobs is None:
            probs = np.zeros(len(keep))
            probs[0] = 1.0  # without probabilities only the best well-formed beam counts
        else:
            lp = np.asarray([beam_logprobs[i] for i in keep], dtype=np.float64)
            lp = lp / beam_temperature if np.isfinite(beam_temperature) else np.zeros_like(lp)
            probs = np.exp(lp - lp.max())
            probs /= probs.sum()
        if ranking == "neighbours":
            targets: dict[str, np.ndarray] = {}
            for i, p in zip(keep, probs):
                for m, v in self.content.decode(self.index, parsed[i][0], weights).items():
                    targets[m] = targets.get(m, 0.0) + p * v
            total = self.content.score(targets, weights)
            rows = top_k(total[None, :], k)[0]
            scores = total[rows]
        elif len(keep) == 1 or np.count_nonzero(probs) == 1:
            codes = parsed[keep[int(np.argmax(probs))]][0]
            if ranking == "match":
                rows, scores = self.index.search_codes(codes, weights, k=k)
            else:
                total = self.index.score_codes(codes, weights)
        else:
            total = np.zeros(self.db.num_tracks)
            for i, p in zip(keep, probs):
                if p > 0:
                    total += p * self.index.score_codes(parsed[i][0], weights)
            if ranking == "match":
                rows = top_k(total[None, :], k)[0]
                scores = total[rows]
        if ranking == "beams":
            first = list(dict.fromkeys(r for r in (self.exact_row(*parsed[i]) for i in keep) if r is not None))[:k]
            rest = total.copy()
            rest[first] = -np.inf
            fill = top_k(rest[None, :], k - len(first))[0] if k > len(first) else np.zeros(0, np.int64)
            rows = np.concatenate([np.asarray(first, np.int64), fill])
            scores = total[rows]
        top_codes = parsed[keep[int(np.argmax(probs))]][0]
        matched = [[m for m in self.db.modalities
                    if top_codes[m][0] >= 0 and self.db.codes[m][r, 0] == top_codes[m][0]] for r in rows]
        return Retrieved(np.asarray(rows, np.int64), np.asarray(scores, np.float64), matched)


def modality_weights(scores: Sequence[float] | np.ndarray, modalities: Sequence[str]) -> dict[str, float]:
    """One row of relevance-model scores (nine, registry order, 0..10) -> {modality: weight} for the given groups.

    Groups that are not input modalities (joint codes of other quantizers) get the mean weight."""
    from common.registry import MODALITY_NAMES

    s = np.asarray(scores, dtype=np.float64)
    named = dict(zip(MODALITY_NAMES, s))
    mean = float(np.mean([named[m] for m in modalities if m in named])) if any(m in named for m in modalities) \
        else 1.0
    return {m: float(named.get(m, mean)) for m in modalities}


def reciprocal_rank_scores(lists: Sequence[Sequence], rrf_k: float = 60.0) -> dict:
    """Ranked lists (of track IDs or rows) -> {item: score}, in the order items were first met: an item at rank r
    (from 1) of a list adds 1 / (rrf_k + r)."""
    score: dict = {}
    for ranked in lists:
        for r, item in enumerate(ranked, start=1):
            score[item] = score.get(item, 0.0) + 1.0 / (rrf_k + r)
    return score


def reciprocal_rank_fusion(lists: Sequence[Sequence], rrf_k: float = 60.0) -> list:
    """Ranked lists -> one list, best first by reciprocal_rank_scores. Ties keep the order in which items were first
    met (the first list's first)."""
    score = reciprocal_rank_scores(lists, rrf_k)
    return sorted(score, key=lambda t: -score[t])


def artist_groups(track_ids: Sequence[str], artists: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Tracks' IDs and artists (None or blank: unknown) -> (int [N] artist per track, -1 = unknown; the tracks' rows
    in track-ID order): what `lead_group_first` needs to lead a ranking with its top track's artist."""
    names = sorted({a for a in artists if isinstance(a, str) and a.strip()})
    code = {a: i for i, a in enumerate(names)}
    group_of = np.asarray([code.get(a, -1) for a in artists], np.int64)
    return group_of, np.argsort(np.asarray(track_ids, dtype=object), kind="stable")


def lead_group_first(ranked: Sequence[int], group_of: np.ndarray, k: int,
                     fill_order: np.ndarray | None = None) -> np.ndarray:
    """One ranking (catalog rows, best first, -1 = none) -> its first k rows with the first track's group (its artist)
    in front: the group's tracks in their ranked order, then the group's other catalog tracks in `fill_order` (rows;
    default: row order), then the rest of the ranking. A first track with no group (-1) leaves the ranking as it is.

    `group_of` is an int [N] group id per catalog row (-1 = unknown). An answer led by one artist's track is topped
    up with that artist: a ranking rule that reads the catalog, not the request."""
    rows = [int(r) for r in ranked if r >= 0]
    if not rows or group_of[rows[0]] < 0:
        return np.asarray(rows[:k], np.int64)
    lead = group_of[rows[0]]
    front = [r for r in rows if group_of[r] == lead]
    taken = set(front)
    order = np.arange(len(group_of)) if fill_order is None else np.asarray(fill_order)
    for r in order[group_of[order] == lead]:
        if len(front) >= k:
            break
        if int(r) not in taken:
            front.append(int(r))
            taken.add(int(r))
    return np.asarray((front + [r for r in rows if r not in taken])[:k], np.int64)
