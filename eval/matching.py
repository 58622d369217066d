"""Hierarchical code matching over a token database: TokenDB -> sparse prefix index -> top-k tracks for a query.

3MToken Appendix C scores a candidate track against a query by hierarchical matching, each modality weighted:

    score(q, t) = sum_m w_m * sum_l [codes_m[1..l](q) == codes_m[1..l](t)]

Level 2 counts only when level 1 matches, level 3 only when levels 1 and 2 match. A level-l *prefix* match implies
every earlier level matches, so the score is a weighted count of shared prefixes. The index is a binary CSR matrix
X [N, P] with one column per (modality, level, code prefix); a track without a modality has no entries for it.
Scoring catalog tracks is then the sparse product Q @ X.T, and scoring one generated code sequence reads the
posting lists (columns) of its L prefixes per modality: no Python loop over the catalog in either case.
Ties are broken deterministically: higher score first, then lower catalog row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING, get_group, is_joint_group

# Dense score chunks are [chunk, N] float64; the automatic chunk size keeps one chunk near this many bytes.
SCORE_CHUNK_BYTES = 32 << 20  # small enough for the allocator to reuse it
PRUNE_MIN_TRACKS = 20_000  # below this many tracks search_codes scores every track
PRUNE_MAX_CANDIDATE_SHARE = 1 / 64  # the pruned path gives up when more tracks than this share need exact scores


@dataclass(frozen=True)
class PrefixBlock:
    """The columns of one (modality, level): `keys[i]` identifies the i-th distinct prefix, column `offset + i`.

    A prefix key is `parent * codebook_size + code`, where `parent` is the position of the level-(l-1) prefix in
    its own block (0 at level 1). Keys never overflow (they are < distinct prefixes x codebook size) and are sorted,
    so a generated code sequence finds its column with a binary search per level.
    """

    modality: str
    level: int  # 1-based
    codebook_size: int
    offset: int
    keys: np.ndarray  # int64 [distinct prefixes], sorted


def _resolve_weights(modalities: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """None -> 1.0 for every indexed group; a mapping -> its weights (modalities it leaves out get 0, joint groups
    such as SH or FU that it leaves out get 1.0: weights given per modality say nothing about a shared code).

    Known groups that are not indexed are ignored (the relevance model scores all nine; a catalog may lack some).
    """
    if weights is None:
        return {m: 1.0 for m in modalities}
    named = {get_group(m): float(w) for m, w in weights.items()}
    return {m: named.get(m, 1.0 if is_joint_group(m) else 0.0) for m in modalities}


def top_k(scores: np.ndarray, k: int, integer_scores: bool = False) -> np.ndarray:
    """float [B, N] scores -> int64 [B, min(k, N)] rows, best first; ties go to the lower row.

    np.partition finds the k-th best score per row in O(N); only the entries tied with it need a rule, and they are
    taken lowest row first, so the result does not depend on the partition algorithm. With `integer_scores` (every
    finite score a whole number, as with the paper's equal weights) the row is folded into the key
    score * N + (N - 1 - row), which makes keys unique and needs a single argpartition (the caller vouches that
    |score| * N < 2**52). Excluded entries are -inf; callers keep k <= the number of finite scores.
    """
    scores = np.atleast_2d(scores)
    b, n = scores.shape
    k = min(int(k), n)
    if k <= 0:
        return np.zeros((b, 0), np.int64)
    if integer_scores:
        key = scores * n
        key += np.arange(n - 1, -1, -1, dtype=np.float64)  # exact: whole numbers below 2**53
        part = np.argpartition(key, n - k, axis=1)[:, n - k:]
        order = np.argsort(-np.take_along_axis(key, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1).astype(np.int64)
    neg = np.negative(scores)
    neg.partition(k - 1, axis=1)
    kth = -neg[:, k - 1]  # [B] k-th largest score
    del neg
    chosen = scores > kth[:, None]
    tied = scores == kth[:, None]
    need = k - chosen.sum(axis=1)
    cut = np.flatnonzero(need < tied.sum(axis=1))  # rows whose boundary tie must be cut: keep its lowest rows
    if len(cut):
        sub = tied[cut]
        tied[cut] = sub & (np.cumsum(sub, axis=1, dtype=np.int32) <= need[cut, None])
    chosen |= tied
    rows = np.nonzero(chosen)[1].reshape(b, k)  # row-major: each line's k columns, ascending
    sel = np.take_along_axis(scores, rows, axis=1)
    order = np.lexsort((rows, -sel), axis=-1)  # primary: score desc, secondary: row asc
    return np.take_along_axis(rows, order, axis=1).astype(np.int64)


class HierarchicalIndex:
    """Sparse prefix index of a TokenDB for hierarchical matching (see the module docstring)."""

    def __init__(self, matrix: sp.csr_matrix, blocks: list[PrefixBlock], modalities: tuple[str, ...]):
        self.X = matrix  # [N, P] binary, one column per (modality, level, prefix)
        self.XT = matrix.T.tocsr()  # [P, N]: row p = posting list of prefix p (catalog rows, ascending)
        self.blocks = blocks
        self.modalities = modalities
        self._blocks_of = {m: [b for b in blocks if b.modality == m] for m in modalities}
        self._bitmaps: tuple[np.ndarray, np.ndarray] | None = None  # level-1 posting bitmaps, built on first use
        self._code_arrays: dict[str, np.ndarray] = {}  # codes per modality, read back from X on first use
        # below this many tracks search_codes scores every track (the pruned path's setup does not pay off)
        self.min_tracks_for_pruning = PRUNE_MIN_TRACKS

    @classmethod
    def from_token_db(cls, db: TokenDB, modalities: Sequence[str] | None = None) -> HierarchicalIndex:
        mods = db.modalities if modalities is None else tuple(m for m in db.modalities
                                                              if m in {get_group(x) for x in modalities})
        n = db.num_tracks
        blocks: list[PrefixBlock] = []
        rows, cols = [], []
        offset = 0
        for m in mods:
            codes = db.codes[m]
            present = np.flatnonzero(codes[:, 0] != MISSING)
            parent = np.zeros(len(present), np.int64)
            for level, size in enumerate(db.codebook_sizes[m], start=1):
                key = parent * size + codes[present, level - 1].astype(np.int64)
                uniq, inverse = np.unique(key, return_inverse=True)
                blocks.append(PrefixBlock(m, level, size, offset, uniq))
                rows.append(present)
                cols.append(offset + inverse.reshape(-1))
                parent = inverse.reshape(-1).astype(np.int64)
                offset += len(uniq)
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        matrix = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, offset))
        matrix.sort_indices()
        return cls(matrix, blocks, mods)

    @property
    def num_tracks(self) -> int:
        return self.X.shape[0]

    def column_weights(self, weights: Mapping[str, float] | None) -> np.ndarray:
        """float64 [P]: each column's modality weight."""
        w = _resolve_weights(self.modalities, weights)
        out = np.zeros(self.X.shape[1])
        for b in self.blocks:
            out[b.offset:b.offset + len(b.keys)] = w[b.modality]
        return out

    def integer_scores(self, weights: Mapping[str, float] | None) -> bool:
        """True when every score is a whole number small enough for top_k's exact integer path."""
        w = _resolve_weights(self.modalities, weights)
        per_level = np.array([w[b.modality] for b in self.blocks])
        whole = bool(np.all(np.isfinite(per_level)) and np.all(per_level == np.round(per_level)))
        return whole and float(np.abs(per_level).sum()) * max(1, self.num_tracks) < 2.0**52

    def score_rows(self, query_rows: Sequence[int] | np.ndarray, weights: Mapping[str, float] | None = None
                   ) -> np.ndarray:
        """Catalog rows as queries -> float64 [len(query_rows), N] hierarchical matching scores (dense).

        Call it on chunks of queries (see `rank_rows`); zero-weight modalities cost nothing."""
        q = self.X[np.asarray(query_rows, dtype=np.int64)].copy()
        q.data = q.data * self.column_weights(weights)[q.indices]
        q.eliminate_zeros()
        return (q @ self.XT).toarray()

    def rank_rows(self, query_rows: Sequence[int] | np.ndarray, weights: Mapping[str, float] | None = None,
                  k: int = 50, exclude_self: bool = True, chunk_size: int | None = None) -> np.ndarray:
        """Catalog rows as queries -> int64 [len(query_rows), k'] top rows (k' = min(k, N - exclude_self)).

        With `exclude_self`, each query's own row never appears in its ranking."""
        query_rows = np.asarray(query_rows, dtype=np.int64)
        n = self.num_tracks
        k = min(int(k), n - int(exclude_self))
        chunk = chunk_size or max(1, min(4096, SCORE_CHUNK_BYTES // max(1, 8 * n)))
        whole = self.integer_scores(weights)
        out = np.zeros((len(query_rows), max(k, 0)), np.int64)
        for start in range(0, len(query_rows), chunk):
            rows = query_rows[start:start + chunk]
            scores = self.score_rows(rows, weights)
            if exclude_self:
                scores[np.arange(len(rows)), rows] = -np.inf
            out[start:start + len(rows)] = top_k(scores, k, integer_scores=whole)
        return out

    def _matched_prefixes(self, codes: Mapping[str, Sequence[int]], weights: Mapping[str, float] | None
                          ) -> list[tuple[float, list[int], str, list[int]]]:
        """One code sequence -> [(modality weight, columns of its prefixes that some track has (level 1 first),
        modality, its codes)], one entry per scored modality, in the order of `codes` (the order in which scores
        are summed).

        The walk stops at the first level whose prefix no track has; a modality that is absent from `codes`,
        missing (-1), not indexed or weighted 0 is left out."""
        w = _resolve_weights(self.modalities, weights)
        out = []
        for m, levels in codes.items():
            m = get_group(m)
            if m not in self._blocks_of or w[m] == 0.0:
                continue
            levels = [int(c) for c in levels]
            if any(c == MISSING for c in levels):
                continue
            parent, cols = 0, []
            for block, code in zip(self._blocks_of[m], levels):
                if not 0 <= code < block.codebook_size:
                    raise ValueError(f"{m} level {block.level}: code {code} outside codebook of {block.codebook_size}")
                key = parent * block.codebook_size + code
                pos = int(np.searchsorted(block.keys, key))
                if pos == len(block.keys) or block.keys[pos] != key:
                    break  # no track has this prefix, hence none has any longer one
                cols.append(block.offset + pos)
                parent = pos
            out.append((w[m], cols, m, levels))
        return out

    def _postings(self, col: int) -> np.ndarray:
        return self.XT.indices[self.XT.indptr[col]:self.XT.indptr[col + 1]]

    def score_codes(self, codes: Mapping[str, Sequence[int]], weights: Mapping[str, float] | None = None
                    ) -> np.ndarray:
        """One code sequence {modality: [c1..cL]} (e.g. generated by the LLM) -> float64 [N] scores.

        Each modality reads at most L posting lists; it stops at the first level whose prefix no track has.
        A modality that is absent from `codes`, missing (-1) or not indexed contributes nothing."""
        scores = np.zeros(self.num_tracks)
        for weight, cols, _, _ in self._matched_prefixes(codes, weights):
            for col in cols:
                scores[self._postings(col)] += weight
        return scores

    def search_codes(self, codes: Mapping[str, Sequence[int]], weights: Mapping[str, float] | None = None,
                     k: int = 10, exclude: Sequence[int] | np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """One code sequence -> (int64 rows [k'], float64 scores [k']), best first, ties to the lower row.

        `exclude`: catalog rows that must not be returned (e.g. the seed, or tracks already played).
        Large catalogs with positive weights take the pruned path (`_search_pruned`), which returns exactly what
        scoring every track would (same rows, same floats)."""
        if exclude is not None and len(exclude):
            exclude = np.unique(np.asarray(exclude, dtype=np.int64))
        else:
            exclude = np.zeros(0, np.int64)
        if self.num_tracks >= self.min_tracks_for_pruning and k > 0:
            in_range = len(exclude) == 0 or (exclude[0] >= 0 and exclude[-1] < self.num_tracks)
            paths = self._matched_prefixes(codes, weights)
            if in_range and all(np.isfinite(p[0]) and p[0] > 0 for p in paths):
                found = self._search_pruned(paths, min(int(k), self.num_tracks - len(exclude)), exclude)
                if found is not None:
                    return found
        return self._search_dense(codes, weights, k, exclude)

    def _search_dense(self, codes: Mapping[str, Sequence[int]], weights: Mapping[str, float] | None, k: int,
                      exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score every track, then top_k: O(N) per query."""
        scores = self.score_codes(codes, weights)
        valid = self.num_tracks
        if len(exclude):
            scores[exclude] = -np.inf
            valid -= len(exclude)
        whole = self.integer_scores(weights)
        rows = top_k(scores[None, :], min(int(k), valid), integer_scores=whole)[0]
        return rows, scores[rows]

    def _level1_bitmaps(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (uint64 [level-1 columns, ceil(N / 64)] bitmaps of their posting lists, int64 [P] row of each column in
        it, -1 for deeper columns). Built on first use: 32 columns x N / 8 bytes per modality with the paper's sizes."""
        if self._bitmaps is None:
            words = -(-self.num_tracks // 64)
            level1 = [c for b in self.blocks if b.level == 1 for c in range(b.offset, b.offset + len(b.keys))]
            bits = np.zeros((len(level1), words), np.uint64)
            flags = np.zeros(words * 64, bool)
            for i, col in enumerate(level1):
                flags[:] = False
                flags[self._postings(col)] = True
                bits[i] = np.packbits(flags, bitorder="little").view(np.uint64)
            row_of = np.full(self.X.shape[1], -1, np.int64)
            row_of[level1] = np.arange(len(level1))
            self._bitmaps = (bits, row_of)
        return self._bitmaps

    def _codes(self, modality: str) -> np.ndarray:
        """int [N, L] codes of one modality (-1 where missing), read back from the posting lists; built on first use."""
        if modality not in self._code_arrays:
            blocks = self._blocks_of[modality]
            dtype = np.int16 if max(b.codebook_size for b in blocks) < 2**15 else np.int32
            out = np.full((self.num_tracks, len(blocks)), MISSING, dtype)
            for level, b in enumerate(blocks):
                lengths = np.diff(self.XT.indptr[b.offset:b.offset + len(b.keys) + 1])
                start, end = self.XT.indptr[b.offset], self.XT.indptr[b.offset + len(b.keys)]
                out[self.XT.indices[start:end], level] = np.repeat(b.keys % b.codebook_size, lengths)
            self._code_arrays[modality] = out
        return self._code_arrays[modality]

    def _search_pruned(self, paths: list[tuple[float, list[int], str, list[int]]], k: int, exclude: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact top-k for positive weights without scoring every track; None when it cannot prune.

        A track's score is a sum of c entries, one per (modality, level) prefix it shares with the query, so it
        lies between the sums of the c smallest and the c largest entry weights. c is counted for all tracks at
        once by bit-sliced addition of the posting lists as bitmaps (the long level-1 lists over all N / 64 words,
        the short deeper lists only on their own words). The k-th largest lower bound is a threshold theta; only
        tracks whose upper bound reaches theta can be in the top-k, and those few are scored exactly, summing the
        weights in the same order as `score_codes` (so the floats, hence ties, are identical). With equal weights
        the bounds are the scores: all tracks of one count tie, and only the lowest rows of the last count needed
        are scored."""
        if k <= 0 or not paths:
            return None
        bits, row_of = self._level1_bitmaps()
        words = bits.shape[1]
        entries = np.array([w for w, cols, _, _ in paths for _ in cols])
        planes = [np.zeros(words, np.uint64) for _ in range(len(entries).bit_length())]
        scratch = np.empty(words, np.uint64)
        for _, cols, _, _ in paths:
            carry = bits[row_of[cols[0]]].copy()
            for plane in planes:  # ripple-carry add of one bit per track, over all words
                np.bitwise_and(plane, carry, out=scratch)
                plane ^= carry
                carry, scratch = scratch, carry
            for col in cols[1:]:
                at, carry = _sparse_bitmap(self._postings(col))
                for plane in planes:  # the same, on the few words this list touches
                    old = plane[at]
                    plane[at] = old ^ carry
                    carry = old & carry
        valid = ~_bitmap(exclude, words)
        valid[-1] &= _tail_mask(self.num_tracks)
        top = len(entries)

        def with_count(c: int) -> np.ndarray:
            m = valid.copy()
            for j, plane in enumerate(planes):
                m &= plane if (c >> j) & 1 else ~plane
            return m

        w_sorted = np.sort(entries)
        low = np.r_[0.0, np.cumsum(w_sorted)]  # low[c]: sum of the c smallest entries
        high = np.r_[0.0, np.cumsum(w_sorted[::-1])]  # high[c]: sum of the c largest
        masks, found, c_lo = {}, 0, top
        while c_lo > 0:
            masks[c_lo] = with_count(c_lo)
            found += int(np.bitwise_count(masks[c_lo]).sum())
            if found >= k:
                break
            c_lo -= 1
        if c_lo == 0:
            return None  # fewer than k tracks share a prefix with the query: nothing to prune
        slack = 1e-9 * high[-1]  # the bounds are summed in another order than the scores
        c_min = max(1, int(np.searchsorted(high, low[c_lo] - slack)))
        equal = w_sorted[0] == w_sorted[-1]
        parts, budget = [], max(int(self.num_tracks * PRUNE_MAX_CANDIDATE_SHARE), k)
        for c in range(top, c_min - 1, -1):
            mask = masks[c] if c in masks else with_count(c)
            parts.append(_rows_of(mask, limit=k if equal and c == c_lo else None))
            budget -= len(parts[-1])
            if budget < 0:
                return None  # bounds too loose (very unequal weights): scoring every track is cheaper
        rows = np.sort(np.concatenate(parts))
        scores = self._exact_scores(paths, rows)
        order = np.lexsort((rows, -scores))[:k]
        return rows[order], scores[order]

    def _exact_scores(self, paths: list[tuple[float, list[int], str, list[int]]], rows: np.ndarray) -> np.ndarray:
        """float64 [len(rows)] scores of the given tracks, summed in the order of `score_codes`."""
        scores = np.zeros(len(rows))
        for weight, cols, modality, levels in paths:
            depth = len(cols)
            match = self._codes(modality)[rows, :depth] == np.asarray(levels[:depth])
            match = np.logical_and.accumulate(match, axis=1)
            for level in range(depth):
                scores += np.where(match[:, level], weight, 0.0)
        return scores


def _bitmap(rows: np.ndarray, words: int) -> np.ndarray:
    """Sorted unique rows -> uint64 [words] bitmap (bit j of word i = row 64 i + j)."""
    out = np.zeros(words, np.uint64)
    at, value = _sparse_bitmap(rows)
    out[at] = value
    return out


def _sparse_bitmap(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique rows -> (int64 word positions, uint64 words): the non-zero words of their bitmap."""
    rows = np.asarray(rows, dtype=np.int64)
    word = rows >> 6
    starts = np.r_[0, np.flatnonzero(np.diff(word)) + 1] if len(rows) else np.zeros(0, np.int64)
    bits = np.left_shift(np.uint64(1), (rows & 63).astype(np.uint64))
    return word[starts], (np.bitwise_or.reduceat(bits, starts) if len(rows) else bits)


def _tail_mask(n: int) -> np.uint64:
    """The valid bits of the last bitmap word of n rows."""
    used = n - 64 * ((n - 1) // 64)
    return np.uint64((1 << used) - 1)


def _rows_of(bitmap: np.ndarray, limit: int | None = None) -> np.ndarray:
    """uint64 bitmap -> int64 rows of its set bits, ascending (only the first `limit` of them, if given)."""
    if limit is not None:
        enough = np.searchsorted(np.cumsum(np.bitwise_count(bitmap)), limit)
        bitmap = bitmap[:enough + 1]
    nz = np.flatnonzero(bitmap)
    flags = np.unpackbits(bitmap[nz].view(np.uint8), bitorder="little").reshape(len(nz), 64)
    r, b = np.nonzero(flags)
    rows = nz[r] * 64 + b
    return rows if limit is None else rows[:limit]


def brute_force_scores(db: TokenDB, query_row: int, weights: Mapping[str, float] | None = None,
                       modalities: Sequence[str] | None = None) -> np.ndarray:
    """Reference for tests: the hierarchical matching score of every track against catalog row `query_row`,
    written as the paper states it (a level counts only while all earlier levels matched). float64 [N]."""
    mods = db.modalities if modalities is None else tuple(m for m in db.modalities if m in modalities)
    w = _resolve_weights(mods, weights)
    scores = np.zeros(db.num_tracks)
    for t in range(db.num_tracks):
        total = 0.0
        for m in mods:
            q, c = db.codes[m][query_row], db.codes[m][t]
            if q[0] == MISSING or c[0] == MISSING:
                continue
            for level in range(len(q)):
                if q[level] != c[level]:
                    break
                total += w[m]
        scores[t] = total
    return scores
