"""Content-neighbour ranking: generated IDs -> the content they stand for -> the tracks nearest to it.

Hierarchical matching (`inference.matching`) scores a track by the code prefixes it shares with a beam, so two
tracks whose level-1 codes differ score 0 however close their content is. With the RQ-VAE's coarse first levels an
artist's tracks spread over many level-1 codes (docs/t2mr.md, round 5), and matching cannot bring them back
together. This ranking decodes each modality's codes through the catalog instead: the mean content vector of the
tracks that carry the beam's deepest existing prefix, merged over beams by their probabilities, and ranks every track
by the modality-weighted cosine similarity of its own vectors to that mean:

    score(t) = sum_m w_m * cos(x_m(t), sum_b p_b * mean{x_m(u) : u carries beam b's deepest m-prefix})

A joint code group (FusID's FU, MusicRec's SH) stands for several modalities at once: its tracks feed the targets of
every content modality that is not a code group of its own. Vectors are the run's embeddings (`data_gen.vectorize`),
standardised per dimension over the tracks that have the modality and scaled to unit length; a track without a
modality contributes 0 there. The score is linear in the weights, so one matrix-vector product per modality and
request ranks the whole catalog: 8.2 ms per request with 16 beams on 28,356 tracks and one CPU core, against 2.1 ms for
hierarchical matching (measured on the round-6 evaluation generations, docs/t2mr.md). Past a few million tracks a
vector index (faiss) would replace the exact product.

On the Spotify T2MR validation split it ties hierarchical matching with tuned weights and does not replace it
(docs/t2mr.md, round 6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data_gen.vectorize.embeddings import EmbeddingStore
from inference.matching import HierarchicalIndex, _resolve_weights
from tokenizer_ext.tokens import is_joint_group


class ContentSpace:
    """Per-modality content vectors in a token database's row order (unit length, or 0 where absent)."""

    def __init__(self, vectors: Mapping[str, np.ndarray]):
        sizes = {len(v) for v in vectors.values()}
        if len(sizes) > 1:
            raise ValueError(f"content vectors of different lengths: { {m: len(v) for m, v in vectors.items()} }")
        self.vectors = {m: np.asarray(v, dtype=np.float32) for m, v in vectors.items()}

    @classmethod
    def from_run(cls, run_dir: str | Path, track_ids: Sequence[str], modalities: Sequence[str]) -> ContentSpace:
        """The run's embeddings of `modalities`, reordered to `track_ids` (a token DB's rows).

        Raises when a modality has no embeddings or a track is not in the embedding store (a token DB of another
        run)."""
        store = EmbeddingStore(run_dir)
        row_of = {t: i for i, t in enumerate(store.track_ids)}
        missing = [t for t in track_ids if t not in row_of]
        if missing:
            raise ValueError(f"{store.dir / 'tracks.parquet'}: {len(missing):,} of {len(track_ids):,} tracks are not "
                             f"in the embedding store (first: {missing[0]!r}); the token DB is from another run")
        order = np.fromiter((row_of[t] for t in track_ids), dtype=np.int64, count=len(track_ids))
        vectors = {}
        for m in modalities:
            x = np.asarray(store.load(m)[order], dtype=np.float32)
            present = store.presence(m)[order]
            vectors[m] = unit_rows(x, present)
        return cls(vectors)

    @property
    def num_tracks(self) -> int:
        return len(next(iter(self.vectors.values()))) if self.vectors else 0

    def decode(self, index: HierarchicalIndex, codes: Mapping[str, Sequence[int]],
               weights: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
        """One code sequence -> {modality: mean vector of the tracks carrying its deepest existing prefix}.

        A joint group's tracks stand for the content modalities that are not code groups of their own."""
        out = {}
        for group, rows in index.deepest_postings(codes, weights).items():
            mods = [m for m in self.vectors if m not in index.modalities] if is_joint_group(group) else [group]
            for m in mods:
                if m in self.vectors:
                    out[m] = self.vectors[m][rows].mean(axis=0)
        return out

    def score(self, targets: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
        """{modality: target vector} -> float64 [N]: sum_m w_m cos(x_m(t), target_m) (0 for a zero target)."""
        w = _resolve_weights(tuple(self.vectors), weights)
        out = np.zeros(self.num_tracks)
        for m, target in targets.items():
            norm = float(np.linalg.norm(target))
            if w.get(m, 0.0) and norm > 0:
                out += w[m] * (self.vectors[m] @ (target / norm).astype(np.float32)).astype(np.float64)
        return out


def content_modalities(db) -> tuple[str, ...]:
    """The modalities whose content a token DB's codes stand for: its code groups, with each joint group replaced by
    the input modalities its tokenizer read (token_db.json's `input_modalities`)."""
    inputs = tuple(db.meta.get("input_modalities") or ())
    out = [m for m in db.modalities if not is_joint_group(m)]
    if any(is_joint_group(m) for m in db.modalities):
        if not inputs:
            raise ValueError(f"token DB of {db.tokenizer!r} has joint code groups but no input_modalities in its "
                             f"token_db.json; the neighbours ranking cannot tell which content they stand for")
        out += [m for m in inputs if m not in out]
    return tuple(out)


def unit_rows(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    """float [N, d] -> each dimension standardised over the present rows, rows scaled to unit length, absent rows 0.

    Standardising first keeps one large-scale dimension (tempo next to valence) from deciding the cosine."""
    present = np.asarray(present, dtype=bool)
    out = np.zeros(x.shape, np.float32)
    if not present.any():
        return out
    rows = x[present].astype(np.float64)
    z = (rows - rows.mean(axis=0)) / np.maximum(rows.std(axis=0), 1e-8)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    out[present] = z
    return out
