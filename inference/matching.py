"""Hierarchical code matching (3MToken App. C): TokenDB -> sparse prefix index -> top-k tracks for a query.

    score(q, t) = sum_m w_m * sum_l [codes_m[1..l](q) == codes_m[1..l](t)]

Level l counts only when levels 1..l-1 match, so the score is a weighted count of shared code prefixes. The index is a
binary CSR matrix X [N, P], one column per (modality, level, prefix); scoring is the sparse product Q @ X.T, or, for
one generated sequence, its prefixes' posting lists. Ties: higher score first, then lower catalog row.
"""

from __future__ import annotations

import threading
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
PRUNE_WEIGHT_STEPS = 7  # unequal float weights are bounded from above in steps of max weight / 7
PRUNE_MAX_WHOLE_WEIGHT = 1023  # whole-number weights up to this are summed exactly as integers


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
        self._scratch = threading.local()
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

    def deepest_postings(self, codes: Mapping[str, Sequence[int]], weights: Mapping[str, float] | None = None
                         ) -> dict[str, np.ndarray]:
        """One code sequence -> {modality: catalog rows that share its deepest prefix any track has}.

        Modalities that are missing, not indexed, weighted 0, or whose level-1 code no track has are left out."""
        return {m: self._postings(cols[-1]) for _, cols, m, _ in self._matched_prefixes(codes, weights) if cols}

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

        A track's score is the sum of the weights of the (modality, level) prefixes it shares with the query. With
        u = ceil(w / delta) per modality, U = sum of u over the shared prefixes bounds the score from above
        (delta U). U is computed for all tracks at once as a bit-sliced integer: a modality adds u times its depth
        of match, whose two bits are XORs of its nested posting-list bitmaps, through carry-save adders (O(N / 64)
        word operations). The k tracks of largest U are scored exactly; the k-th best of those scores, theta, is
        reached by the true k-th best, so only tracks with delta U >= theta can be in the top-k, and those are
        scored exactly, summing the weights in the order of `score_codes` (same floats, hence same ties). When
        the weights are equal or whole numbers, delta makes U the exact score: tracks with equal U then have equal
        floats, so the top-k are the tracks above the k-th largest U and the lowest rows at it."""
        if k <= 0 or not paths:
            return None
        weights = np.array([p[0] for p in paths])
        if (weights == weights[0]).all():
            delta, exact = float(weights[0]), True
        elif (weights == np.round(weights)).all() and weights.max() <= PRUNE_MAX_WHOLE_WEIGHT:
            delta, exact = 1.0, True
        else:
            delta, exact = float(weights.max()) / PRUNE_WEIGHT_STEPS, False
        units = np.ceil(weights / delta).astype(np.int64)
        bits, row_of = self._level1_bitmaps()
        words = bits.shape[1]
        # each modality adds unit * depth, depth = shared levels (0..3) as two bit planes of nested posting lists
        flags = getattr(self._scratch, "flags", None)
        if flags is None:  # one all-False scratch per thread, kept between queries (allocating it costs ~0.2 ms)
            flags = self._scratch.flags = np.zeros(64 * words, bool)
        depth_bits = []
        for _, cols, _, _ in paths:
            levels = [bits[row_of[cols[0]]]] + [_bitmap(self._postings(col), words, flags) for col in cols[1:]]
            odd = levels[0]
            for deeper in levels[1:]:
                odd = odd ^ deeper
            depth_bits.append([odd] + levels[1:2])  # bit 0: 1 or 3 levels; bit 1: 2 or more levels

        terms = [(plane, int(u) << j) for u, planes in zip(units, depth_bits) for j, plane in enumerate(planes)]
        valid = ~_bitmap(exclude, words)
        valid[-1] &= _tail_mask(self.num_tracks)
        upper = _bit_sliced_sum(terms, words)
        at_least, equal, v = _kth_largest(upper, k, valid)
        if v == 0:
            return None  # fewer than k tracks share a prefix with the query: nothing to prune
        # the tracks above the k-th largest U, and the lowest rows at it (in the exact case, the answer)
        rows = np.concatenate([_rows_of(at_least & ~equal), _rows_of(equal, limit=k)])
        if not exact:
            seeds = self._exact_scores(paths, rows)
            theta = np.partition(seeds, len(seeds) - k)[len(seeds) - k]
            candidates = _at_least(upper, int(np.ceil(theta * (1 - 1e-9) / delta)), valid)
            if int(np.bitwise_count(candidates).sum()) > max(k, int(self.num_tracks * PRUNE_MAX_CANDIDATE_SHARE)):
                return None  # bounds too loose: scoring every track is cheaper
            rows = _rows_of(candidates)
        rows = np.sort(rows)
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


_BIT = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))  # _BIT[j]: the word with bit j set


def _bitmap(rows: np.ndarray, words: int, flags: np.ndarray | None = None) -> np.ndarray:
    """Unique rows -> uint64 [words] bitmap (bit j of word i = row 64 i + j). `flags`: an all-False bool scratch of
    64 * words entries, left all-False; long lists go through it (packbits), short ones are OR-ed in place."""
    rows = np.asarray(rows)
    if flags is not None and 2 * len(rows) > words:  # about where packbits gets cheaper than or.at
        flags[rows] = True
        out = np.packbits(flags, bitorder="little").view(np.uint64)
        flags[rows] = False
        return out
    out = np.zeros(words, np.uint64)
    np.bitwise_or.at(out, rows >> 6, _BIT[rows & 63])
    return out


def _bit_sliced_sum(terms: list[tuple[np.ndarray, int]], words: int) -> list[np.ndarray]:
    """(uint64 [words] bitmap, whole constant) terms -> per track, the sum of the constants of the bitmaps it is
    in, as bit planes (plane j = bit j of the sum). Carry-save adders column by column: each full adder takes
    three bitmaps of one column, leaves their sum bit there and moves the carry one column up (5 operations)."""
    total = sum(c for _, c in terms)
    columns: list[list[np.ndarray]] = [[] for _ in range(max(1, total.bit_length()) + 1)]
    for bitmap, c in terms:
        for j in range(c.bit_length()):
            if (c >> j) & 1:
                columns[j].append(bitmap)
    planes, scratch = [], np.empty(words, np.uint64)
    for j, column in enumerate(columns[:-1]):
        while len(column) > 1:
            if len(column) >= 3:
                a, b, c = column.pop(), column.pop(), column.pop()
                carry, total = a & b, a ^ b
                np.bitwise_and(c, total, out=scratch)
                carry |= scratch
                total ^= c
                column.append(total)
                columns[j + 1].append(carry)
            else:
                a, b = column.pop(), column.pop()
                column.append(a ^ b)
                columns[j + 1].append(a & b)
        planes.append(column[0] if column else np.zeros(words, np.uint64))
    return planes


def _kth_largest(planes: list[np.ndarray], k: int, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Bit-sliced integers -> (bitmap of valid tracks with value >= v, bitmap of those with value == v, v) for the
    largest v that at least k valid tracks reach (0 if fewer than k are valid). One pass from the top bit down."""
    greater, equal, count_greater, v = np.zeros_like(valid), valid.copy(), 0, 0
    for j in range(len(planes) - 1, -1, -1):
        with_bit = equal & planes[j]
        n = int(np.bitwise_count(with_bit).sum())
        if count_greater + n >= k:
            v |= 1 << j
            equal = with_bit
        else:
            greater |= with_bit
            count_greater += n
            equal &= ~planes[j]
    return greater | equal, equal, v


def _at_least(planes: list[np.ndarray], v: int, valid: np.ndarray) -> np.ndarray:
    """Bitmap of the valid tracks whose bit-sliced value is >= v."""
    if v >= 1 << len(planes):
        return np.zeros_like(valid)
    greater, equal = np.zeros_like(valid), valid.copy()
    for j in range(len(planes) - 1, -1, -1):
        if (v >> j) & 1:
            equal &= planes[j]
        else:
            greater |= equal & planes[j]
            equal &= ~planes[j]
    return greater | equal


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
