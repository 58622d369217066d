"""Text-to-music retrieval baselines (3MTokenRec Sec. 3.4): a catalog + request texts -> top-k catalog rows.

Each has `fit(catalog)` and `rank(queries, k) -> int64 [len(queries), k]`: best first, ties to the lower row, -1 pads.
BM25Retriever (Okapi BM25 over each track's metadata text) and DenseRetriever (a sentence encoder over the same text)
live in inference.text_retrieval (serving uses them too); ArtistTrackNameRetriever (the base LLM lists "Artist -
Title" songs, resolved to catalog tracks by fuzzy matching) is here.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_gen.synth.prompts import load_prompt
from inference.text_retrieval import (  # noqa: F401 (re-exported: the T2MR baselines' names)
    TEXT_COLUMNS,
    BM25Retriever,
    DenseRetriever,
    catalog_records,
    tokenize,
    track_text,
)


def normalize_name(text: str | None) -> str:
    """'Beyoncé – Crazy in Love (feat. JAY-Z)' -> 'beyonce crazy in love feat jay z'."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(tokenize(text))


def base_title(title: str | None) -> str:
    """The title without a version suffix: 'Memories - Dillon Francis Remix' / 'Memories (Remix)' -> 'Memories'."""
    title = re.sub(r"\s*[(\[].*?[)\]]", "", title or "")
    return re.split(r"\s+[-–—]\s+", title)[0]


_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+\s*[.):-]|#\d+)\s*")
_SEPARATOR = re.compile(r"\s+[-–—]\s+")


def parse_song_lines(text: str) -> list[tuple[str, str]]:
    """The LLM's answer -> [(artist, title)] in its order. Accepts 'Artist - Title' (also with numbering, bullets,
    quotes, en dashes) and 'Title by Artist'; other lines are skipped."""
    songs = []
    for line in text.splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"“”\'*').strip()
        if not line:
            continue
        parts = _SEPARATOR.split(line, maxsplit=1)
        if len(parts) == 2:
            artist, title = parts
        elif " by " in line:
            title, artist = line.rsplit(" by ", 1)
        else:
            continue
        artist, title = artist.strip().strip('"“”\''), title.strip().strip('"“”\'')
        if artist and title:
            songs.append((artist, title))
    return songs


class ArtistTrackNameRetriever:
    """The base LLM names songs, which are resolved to catalog rows by fuzzy matching (3MTokenRec's
    ArtistTrackName baseline).

    For each request the LLM (greedy, batched) is asked for `num_songs` "Artist - Title" lines. A line resolves to
    the catalog rows with the best similarity, if it reaches `threshold`:

        similarity = (ratio(artist, track artist) + max ratio(title or its base, track title or its base)) / 2

    with difflib's ratio on normalised names (`normalize_name`; base title = without version suffix). Only tracks
    sharing a word with the named title or artist are compared. Rows resolved from earlier lines come first,
    duplicates are dropped, and the ranking is cut at k (padded with -1). `stats` counts parsed, resolved and
    unresolved names of the last `rank` call.

    `generate`: optional function request texts -> raw answers (tests inject one); by default the answers come from
    `model`/`tokenizer`, loaded with recipes.sft.model_utils (alias "smollm2") when not given."""

    def __init__(self, model=None, tokenizer=None, generate: Callable[[list[str]], list[str]] | None = None,
                 model_name: str = "smollm2", model_cache_dir: str | None = "runs/model_cache",
                 prompt: str = "artist_track_name_v1", num_songs: int = 20, threshold: float = 0.8,
                 max_new_tokens: int = 320, batch_size: int = 8, max_candidates: int = 300):
        self.model, self.tokenizer, self._generate = model, tokenizer, generate
        self.model_name, self.model_cache_dir = model_name, model_cache_dir
        self.prompt = load_prompt(prompt)
        self.num_songs, self.threshold = int(num_songs), float(threshold)
        self.max_new_tokens, self.batch_size, self.max_candidates = int(max_new_tokens), int(batch_size), max_candidates
        self.stats: dict = {}
        self.answers: list[str] = []

    def fit(self, catalog: str | Path | pa.Table | Sequence[dict]) -> ArtistTrackNameRetriever:
        records = catalog_records(catalog)
        self.artists = [normalize_name(r["artist"]) for r in records]
        self.titles = [normalize_name(r["title"]) for r in records]
        self.base_titles = [normalize_name(base_title(r["title"])) for r in records]
        self._rows_with_word: dict[str, list[int]] = {}
        for i, (a, t) in enumerate(zip(self.artists, self.titles)):
            for word in set(a.split()) | set(t.split()):
                self._rows_with_word.setdefault(word, []).append(i)
        return self

    # -- the LLM ---------------------------------------------------------------------------------------------
    def messages(self, request: str) -> list[dict[str, str]]:
        return self.prompt.messages(request=request, num_songs=self.num_songs)

    def generate(self, queries: Sequence[str]) -> list[str]:
        """Request texts -> the LLM's raw answers (greedy decoding, batches of `batch_size`, left padding)."""
        if self._generate is not None:
            return list(self._generate(list(queries)))
        import torch

        self._load_model()
        tok = self.tokenizer
        out = []
        for start in range(0, len(queries), self.batch_size):
            prompts = [tok.apply_chat_template(self.messages(q), tokenize=False, add_generation_prompt=True)
                       for q in queries[start:start + self.batch_size]]
            batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = self.model.generate(**batch, do_sample=False, max_new_tokens=self.max_new_tokens,
                                          pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    def _load_model(self) -> None:
        from recipes.sft.model_utils import load_causal_lm, load_tokenizer

        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.model_name)
        if self.model is None:
            self.model = load_causal_lm(self.model_name, cache_dir=self.model_cache_dir)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # -- resolution -------------------------------------------------------------------------------------------
    def resolve(self, artist: str, title: str) -> tuple[list[int], float]:
        """One named song -> (catalog rows with the best similarity, ascending; that similarity), or ([], best)
        when no track reaches the threshold."""
        a, t = normalize_name(artist), normalize_name(title)
        named_titles = {t, normalize_name(base_title(title))}
        hits = Counter(i for word in set(a.split()) | set(t.split()) for i in self._rows_with_word.get(word, ()))
        candidates = sorted(hits, key=lambda i: (-hits[i], i))[:self.max_candidates]
        best, rows = 0.0, []
        for i in candidates:
            title_sim = max(difflib.SequenceMatcher(None, x, y).ratio()
                            for x in named_titles for y in (self.titles[i], self.base_titles[i]))
            sim = (difflib.SequenceMatcher(None, a, self.artists[i]).ratio() + title_sim) / 2
            if sim > best:
                best, rows = sim, [i]
            elif sim == best:
                rows.append(i)
        return (sorted(rows), best) if best >= self.threshold else ([], best)

    def rank_answers(self, answers: Sequence[str], k: int) -> np.ndarray:
        """Raw LLM answers -> int64 [len(answers), k] resolved rows in the LLM's order, -1 padded."""
        out = np.full((len(answers), k), -1, np.int64)
        parsed = resolved = 0
        unresolved: list[str] = []
        for qi, answer in enumerate(answers):
            ranked: list[int] = []
            for artist, title in parse_song_lines(answer):
                parsed += 1
                rows, _ = self.resolve(artist, title)
                if rows:
                    resolved += 1
                else:
                    unresolved.append(f"{artist} - {title}")
                ranked += [r for r in rows if r not in ranked]
            out[qi, :min(k, len(ranked))] = ranked[:k]
        self.stats = {"queries": len(answers), "names_parsed": parsed, "names_resolved": resolved,
                      "names_unresolved": len(unresolved), "unresolved_examples": unresolved[:20],
                      "queries_without_tracks": int((out[:, 0] < 0).sum()) if k else len(answers),
                      "prompt": self.prompt.version, "threshold": self.threshold}
        return out

    def rank(self, queries: Sequence[str], k: int) -> np.ndarray:
        if not hasattr(self, "titles"):
            raise RuntimeError("ArtistTrackNameRetriever: call fit(catalog) first")
        self.answers = self.generate(list(queries))
        return self.rank_answers(self.answers, k)
