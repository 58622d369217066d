"""Words for each music token: token database + catalog -> {"<ST1-5>": "pop, dance pop, ..."}.

A code token stands for the tracks that carry it; its text is the most frequent phrases of those tracks for the
token's modality (data_gen.synth.words.modality_phrases: tags for ST, artist and title for BM, years for RI, ...).
The SFT recipe can start each new token's embedding from its text (`new_token_init: text`) instead of the mean.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from data_gen.synth.words import catalog_phrases
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING, music_token


def track_phrases(catalog: str | Path, db: TokenDB, run_dir: str | Path | None = None) -> list[dict[str, list[str]]]:
    """Per token-database row: {modality: phrases} (empty for tracks missing from the catalog)."""
    by_track = catalog_phrases(catalog, run_dir, set(db.track_ids))
    return [by_track.get(t, {}) for t in db.track_ids]


def token_texts(db: TokenDB, catalog: str | Path, run_dir: str | Path | None = None, top_k: int = 6
                ) -> dict[str, str]:
    """{music token: its `top_k` most frequent phrases, comma-separated}; tokens whose tracks have no words for the
    modality (and joint groups, whose codes mix modalities: they take every phrase) are described when possible."""
    phrases = track_phrases(catalog, db, run_dir)
    texts: dict[str, str] = {}
    for m in db.modalities:
        for level, _size in enumerate(db.codebook_sizes[m], start=1):
            counts: dict[int, Counter] = defaultdict(Counter)
            for row, code in enumerate(db.codes[m][:, level - 1].tolist()):
                if code == MISSING:
                    continue
                words = phrases[row].get(m) if m in phrases[row] else \
                    [w for ws in phrases[row].values() for w in ws[:2]]
                counts[code].update(w.lower() for w in words or ())
            for code, c in counts.items():
                if c:
                    texts[music_token(m, level, code)] = ", ".join(w for w, _ in c.most_common(top_k))
    return texts
