"""Text-to-music retrieval baselines (3MTokenRec Sec. 3.4): a catalog + request texts -> top-k catalog rows.

Each has `fit(catalog)` and `rank(queries, k) -> int64 [len(queries), k]`: best first, ties to the lower row, -1 pads.
BM25Retriever (Okapi BM25 over each track's metadata text), DenseRetriever (a sentence encoder over the same text),
ArtistTrackNameRetriever (the base LLM lists "Artist - Title" songs, resolved to catalog tracks by fuzzy matching).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from data_gen.synth.prompts import load_prompt
from data_gen.vectorize.text import TextEncoder
from inference.matching import top_k

TEXT_COLUMNS = ("title", "artist", "album", "tags", "genre")
_WORD = re.compile(r"[a-z0-9]+")


def catalog_records(catalog: str | Path | pa.Table | Sequence[dict]) -> list[dict]:
    """A catalog (parquet path, Table or records) -> records with the text columns (absent ones as None)."""
    if isinstance(catalog, (str, Path)):
        names = pq.read_schema(catalog).names
        catalog = pq.read_table(catalog, columns=[c for c in TEXT_COLUMNS if c in names])
    if isinstance(catalog, pa.Table):
        catalog = catalog.select([c for c in TEXT_COLUMNS if c in catalog.column_names]).to_pylist()
    return [{c: rec.get(c) for c in TEXT_COLUMNS} for rec in catalog]


def track_text(rec: dict) -> str:
    """One track's metadata as one text, shared by BM25 and the dense baseline:
    'Title by Artist, from the album Album. Tags: a, b, genre'."""
    text = f"{rec.get('title') or 'unknown title'} by {rec.get('artist') or 'unknown artist'}"
    if rec.get("album"):
        text += f", from the album {rec['album']}"
    tags = list(rec.get("tags") or [])
    if rec.get("genre") and rec["genre"] not in tags:
        tags.append(rec["genre"])
    return f"{text}. Tags: {', '.join(tags)}" if tags else text


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric runs: 'Rock & Roll (2019 Remix)' -> ['rock', 'roll', '2019', 'remix']."""
    return _WORD.findall(text.lower())


def _rank_scores(scores: np.ndarray, k: int) -> np.ndarray:
    rows = top_k(np.asarray(scores, dtype=np.float64), k)
    if rows.shape[1] < k:  # fewer tracks than k
        rows = np.pad(rows, ((0, 0), (0, k - rows.shape[1])), constant_values=-1)
    return rows


class BM25Retriever:
    """Okapi BM25 with the Lucene idf (never negative). For a query q and track text d of length |d| tokens:

        score(q, d) = sum over query tokens t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))
        idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)),   tf = tf(t, d) = count of t in d

    A token repeated in the query counts once per repetition; tokens no track has score nothing. The catalog side
    is one sparse matrix [N, vocabulary] of the per-(track, token) terms, so a batch of queries is one product."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = float(k1), float(b)
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0)
        self.terms: sp.csr_matrix | None = None  # [N, V]

    def fit(self, catalog: str | Path | pa.Table | Sequence[dict] | None = None, texts: Sequence[str] | None = None
            ) -> BM25Retriever:
        """Index a catalog (its `track_text`), or `texts` directly."""
        texts = [track_text(r) for r in catalog_records(catalog)] if texts is None else list(texts)
        rows, cols, tfs, lengths = [], [], [], []
        for i, text in enumerate(texts):
            counts = Counter(tokenize(text))
            lengths.append(sum(counts.values()))
            for token, tf in counts.items():
                rows.append(i)
                cols.append(self.vocabulary.setdefault(token, len(self.vocabulary)))
                tfs.append(tf)
        n, v = len(texts), len(self.vocabulary)
        tf = sp.csr_matrix((np.asarray(tfs, np.float64), (rows, cols)), shape=(n, v))
        df = np.bincount(np.asarray(cols, np.int64), minlength=v)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        lengths = np.asarray(lengths, np.float64)
        avgdl = lengths.mean() if n and lengths.mean() > 0 else 1.0
        norm = self.k1 * (1.0 - self.b + self.b * lengths / avgdl)  # [N]
        tf.data = self.idf[tf.indices] * tf.data * (self.k1 + 1.0) / (tf.data + np.repeat(norm, np.diff(tf.indptr)))
        self.terms = tf
        return self

    def query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """[Q, V] token counts of the queries (unknown tokens dropped)."""
        rows, cols = [], []
        for i, q in enumerate(queries):
            for token in tokenize(q):
                if token in self.vocabulary:
                    rows.append(i)
                    cols.append(self.vocabulary[token])
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(queries), len(self.vocabulary)))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """float64 [Q, N] BM25 scores."""
        if self.terms is None:
            raise RuntimeError("BM25Retriever: call fit(catalog) first")
        return np.asarray((self.query_matrix(queries) @ self.terms.T).toarray())

    def rank(self, queries: Sequence[str], k: int, chunk_size: int = 256) -> np.ndarray:
        out = [_rank_scores(self.scores(queries[i:i + chunk_size]), k) for i in range(0, len(queries), chunk_size)]
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)


class DenseRetriever:
    """Sentence-encoder embeddings of `track_text` (L2-normalised) -> cosine nearest neighbours of the query's.

    `cache_dir`: the catalog embeddings are saved there as dense_<encoder>_<texts sha256[:16]>.npy and reused
    while the encoder and the texts are unchanged."""

    def __init__(self, encoder: str | TextEncoder = "all-MiniLM-L6-v2", batch_size: int = 128,
                 cache_dir: str | Path | None = None, device: str = "cpu"):
        self.encoder = encoder if isinstance(encoder, TextEncoder) else TextEncoder(encoder, device, batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.embeddings: np.ndarray | None = None  # float32 [N, d]

    def cache_path(self, texts: Sequence[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.encoder.name)
        return self.cache_dir / f"dense_{name}_{digest}.npy"

    def fit(self, catalog: str | Path | pa.Table | Sequence[dict] | None = None, texts: Sequence[str] | None = None
            ) -> DenseRetriever:
        texts = [track_text(r) for r in catalog_records(catalog)] if texts is None else list(texts)
        path = self.cache_path(texts)
        if path is not None and path.exists():
            self.embeddings = np.load(path)
            return self
        self.embeddings = self.encoder.encode(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, self.embeddings)
            tmp.replace(path)
        return self

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, N] cosine similarities."""
        if self.embeddings is None:
            raise RuntimeError("DenseRetriever: call fit(catalog) first")
        return self.encoder.encode(list(queries)) @ self.embeddings.T

    def rank(self, queries: Sequence[str], k: int, chunk_size: int = 256) -> np.ndarray:
        out = [_rank_scores(self.scores(queries[i:i + chunk_size]), k) for i in range(0, len(queries), chunk_size)]
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)


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
