"""Text in, tracks out: the 3MTokenRec recommender over an inference bundle (a directory or a Hub id).

    music3m-recommend --bundle BUNDLE --relevance runs/spotify/relevance --query "90s rock for a road trip" --k 10

In Python: `Recommender.from_pretrained(bundle, relevance=...).recommend([query], k=10)` -> per query a list of
{rank, track_id, score, matched} (+ title, artist, album with a catalog). Steps: chat prompt -> beam search under the
mask of inference.decoding -> inference.retrieval (modality weights from the relevance model, or equal) -> records.
The command prints a table per query (`--format table`, the default) or one JSON line per query (`--format json`:
{"query", "tracks"}); a missing bundle, relevance model or catalog, an empty query or k <= 0 is a one-line error
with exit code 2. inference.serve answers the same requests over HTTP.

Fused answers: --hybrid bm25 dense adds text search over the catalog, --ensemble B2 ... adds the rankings of more
bundles (another seed of the same recipe); each ranking --hybrid_depth deep, fused by reciprocal ranks. The Spotify
recipe's validated setting is `--ranking beams --num_beams 16 --artist_first true` (the answer led by its top track's
artist, round 20); its two-seed ensemble (`--num_beams 64 --ensemble`) won validation but not evaluation (round 14).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from common.config import parse_config
from inference.bundle import Bundle, BundleNotFoundError, load_bundle, looks_local, resolve_bundle_path
from inference.decoding import MODES, MusicTokenLogitsProcessor, build_automaton
from inference.retrieval import Retriever, modality_weights, parse_sequence
from recipes.sft.data import encode_requests, request_prompts, request_tokenizer


class RequestError(ValueError):
    """A request that cannot be answered: empty text, or k <= 0."""


class InputNotFoundError(FileNotFoundError):
    """A relevance model or catalog that is not where it was said to be."""


def check_request(text: object, k: object) -> None:
    """Raise RequestError unless `text` is a non-blank string and `k` a positive integer."""
    if not isinstance(text, str):
        raise RequestError(f"the query must be text, got {type(text).__name__}")
    if not text.strip():
        raise RequestError(f"empty query {text!r}: give the request as text, e.g. 'play some 90s rock'")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise RequestError(f"k must be a positive integer (tracks per request), got {k!r}")


def check_relevance_dir(path: str | Path) -> Path:
    """A directory written by `music3m-relevance` (encoder/ + head.pt), or InputNotFoundError."""
    path = Path(path)
    if not path.is_dir():
        raise InputNotFoundError(f"relevance model {path}: no such directory (train one with music3m-relevance "
                                 "--out_dir DIR, or leave --relevance out for equal modality weights)")
    if not (path / "encoder").is_dir() or not (path / "head.pt").is_file():
        raise InputNotFoundError(f"relevance model {path}: not a relevance model (no encoder/ or head.pt; "
                                 "music3m-relevance --out_dir DIR writes them)")
    return path


def check_catalog(path: str | Path) -> Path:
    """An existing catalog file, or InputNotFoundError."""
    if not Path(path).is_file():
        raise InputNotFoundError(f"catalog {path}: no such file (the run directory's catalog.parquet)")
    return Path(path)


def check_hybrid(hybrid: Sequence[str], catalog) -> None:
    """Text retrievers for hybrid answers: known names, and a catalog to search; else RequestError."""
    from inference.text_retrieval import TEXT_SEARCHES

    unknown = [h for h in hybrid if h not in TEXT_SEARCHES]
    if unknown:
        raise RequestError(f"hybrid {unknown}: expected some of {list(TEXT_SEARCHES)}")
    if hybrid and not catalog:
        raise RequestError(f"hybrid {list(hybrid)} searches the catalog's text: give the catalog too")


ARTIST_FIRST_NEEDS = "artist_first puts the top track's artist in front: give a catalog with an 'artist' column"


@dataclass
class Generation:
    beams: list[list[str]]        # token strings of each returned beam (answer part), best first
    logprobs: list[float]         # sequence log-probability of each beam (length-normalised as `generate` scores)


class Recommender:
    """A loaded bundle (+ optional relevance model): generate track IDs for requests and map them to tracks."""

    def __init__(self, bundle: Bundle, relevance=None, mode: str = "catalog", num_beams: int = 4,
                 catalog: str | Path | None = None, device: str = "cpu", ranking: str = "match",
                 hybrid: Sequence[str] = (), hybrid_depth: int = 64, rrf_k: float = 60.0,
                 ensemble: Sequence[Bundle] = (), artist_first: bool = False):
        if mode not in (*MODES, "none"):
            raise ValueError(f"mode must be one of {MODES} or 'none', got {mode!r}")
        check_hybrid(hybrid, catalog)
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.tokenizer = request_tokenizer(bundle.tokenizer)
        self.db = bundle.token_db
        self.relevance = relevance
        self.mode = mode
        self.num_beams = num_beams
        self.ranking = ranking
        self.device = device
        self.retriever = Retriever(self.db)
        self.eot = self._end_of_turn_ids()
        self.automaton = None if mode == "none" else build_automaton(
            self.db, self.tokenizer, mode, end_of_turn=self.eot,
            vocab_size=self.model.get_output_embeddings().weight.shape[0])
        table = _read_catalog(check_catalog(catalog)) if catalog else None
        self.catalog = _catalog_records(table) if table is not None else None
        self.hybrid_depth, self.rrf_k = hybrid_depth, rrf_k
        self.artist_first = artist_first
        if artist_first:
            if table is None or "artist" not in table.column_names:
                raise RequestError(ARTIST_FIRST_NEEDS)
            self._artist_groups(table)
        # more models (other seeds or tokenizers): each generates and ranks with this one's settings, and their
        # rankings are fused with this one's (docs/t2mr.md round 14: a two-seed ensemble)
        self.members = [Recommender(b, relevance, mode=mode, num_beams=num_beams, device=device, ranking=ranking)
                        for b in ensemble]
        self.text_search = None
        if hybrid:  # the same table: the catalog is read once
            from inference.text_retrieval import CatalogTextSearch

            self.text_search = CatalogTextSearch(table, hybrid, device=device)

    def _artist_groups(self, table) -> None:
        """Each token-database row's artist as an int (-1: none or not in the catalog), and the rows by track ID."""
        from inference.retrieval import artist_groups

        artist_of = dict(zip(table.column("track_id").to_pylist(), table.column("artist").to_pylist()))
        self._group_of, self._by_track_id = artist_groups(self.db.track_ids,
                                                          [artist_of.get(t) for t in self.db.track_ids])
        self._db_row = self.db.row_of()

    def _lead_artist_first(self, records: list[dict], k: int) -> list[dict]:
        """A deep answer -> its first k tracks with the top track's artist in front (docs/t2mr.md round 20): the
        artist's tracks of the answer, then its other tracks (by track ID; score 0, `artist_fill`), then the rest."""
        from inference.retrieval import lead_group_first

        by_tid = {r["track_id"]: r for r in records}
        rows = lead_group_first([self._db_row.get(t, -1) for t in by_tid], self._group_of, k, self._by_track_id)
        out = []
        for rank, row in enumerate(rows, start=1):
            tid = self.db.track_ids[int(row)]
            rec = dict(by_tid[tid]) if tid in by_tid else self._record(rank, tid, 0.0, [], artist_fill=True)
            rec["rank"] = rank
            out.append(rec)
        return out

    @classmethod
    def from_pretrained(cls, bundle: str | Path, relevance: str | Path | None = None, device: str = "cpu",
                        **kwargs) -> Recommender:
        """Bundle directory or Hub id (+ relevance model directory) -> Recommender. Missing inputs raise
        BundleNotFoundError / InputNotFoundError (one-line messages) before anything heavy is loaded."""
        ensemble = list(kwargs.pop("ensemble", ()) or ())
        for name in (bundle, *ensemble):  # a missing local bundle (this one, then the ensemble's) is reported first
            if looks_local(name):
                resolve_bundle_path(name)
        check_hybrid(kwargs.get("hybrid", ()), kwargs.get("catalog"))
        if kwargs.get("artist_first") and not kwargs.get("catalog"):  # before the model loads
            raise RequestError(ARTIST_FIRST_NEEDS)
        if kwargs.get("catalog"):
            check_catalog(kwargs["catalog"])
        rel = None
        if relevance:
            from recipes.relevance import RelevanceModel

            rel = RelevanceModel.load(check_relevance_dir(relevance), device=device)
        return cls(load_bundle(bundle), rel, device=device, ensemble=[load_bundle(m) for m in ensemble], **kwargs)

    def _end_of_turn_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        for marker in ("<|im_end|>", "<end_of_turn>"):  # ChatML's and Gemma's end of a turn
            marker_id = self.tokenizer.convert_tokens_to_ids(marker)
            if isinstance(marker_id, int) and marker_id != self.tokenizer.unk_token_id:
                ids.append(marker_id)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    def prompts(self, texts: Sequence[str]) -> list[str]:
        return request_prompts(self.tokenizer, self.bundle.config.get("system_prompt"), texts)

    @torch.no_grad()
    def generate(self, texts: Sequence[str], num_beams: int | None = None, batch_size: int = 16) -> list[Generation]:
        """Requests -> the generated beams (token strings after the prompt) with their log-probabilities.

        One `model.generate` per `batch_size` requests; a progress bar (stderr) when there is more than one batch.
        A batch that runs out of GPU memory (num_beams x batch_size sequences, each step's scores over the whole
        vocabulary) is retried at half the size, down to one request, with a line on stderr."""
        num_beams = num_beams or self.num_beams
        out: list[Generation] = []
        size = batch_size
        with tqdm(total=len(texts), desc="generate", unit="request", disable=len(texts) <= batch_size) as bar:
            while len(out) < len(texts):
                chunk = list(texts[len(out):len(out) + size])
                try:
                    out += self._generate_batch(chunk, num_beams)
                except torch.OutOfMemoryError:
                    if size == 1:
                        raise
                    size //= 2
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    print(f"generate: out of GPU memory at {len(chunk)} requests x {num_beams} beams; retrying "
                          f"{size} at a time", file=sys.stderr)
                    continue
                bar.update(len(chunk))
        return out

    def _generate_batch(self, chunk: list[str], num_beams: int) -> list[Generation]:
        """One `model.generate` over `chunk` under the mask -> its generations."""
        enc = {k: v.to(self.device) for k, v in encode_requests(self.tokenizer, self.prompts(chunk)).items()}
        processors = [] if self.automaton is None else [MusicTokenLogitsProcessor(self.automaton)]
        gen = self.model.generate(
            **enc, logits_processor=processors, max_new_tokens=max_answer_tokens(self.db), do_sample=False,
            num_beams=num_beams, num_return_sequences=num_beams, eos_token_id=self.eot,
            pad_token_id=self.tokenizer.pad_token_id, return_dict_in_generate=True,
            output_scores=True)  # beams: needed for sequences_scores
        seqs = gen.sequences[:, enc["input_ids"].shape[1]:].cpu()
        if num_beams > 1:
            logprobs = gen.sequences_scores.float().cpu().numpy()
        else:
            logprobs = _greedy_logprobs(gen.scores, seqs)
        out = []
        for i in range(len(chunk)):
            rows = range(i * num_beams, (i + 1) * num_beams)
            out.append(Generation([self._strings(seqs[r]) for r in rows], [float(logprobs[r]) for r in rows]))
        return out

    def _strings(self, ids: torch.Tensor) -> list[str]:
        keep = [int(t) for t in ids if int(t) not in self.eot and int(t) != self.tokenizer.pad_token_id]
        return self.tokenizer.convert_ids_to_tokens(keep)

    def weights(self, texts: Sequence[str]) -> list[dict[str, float] | None]:
        """Per request: modality weights from the relevance model, or None (equal weights) without one."""
        if self.relevance is None:
            return [None] * len(texts)
        return [modality_weights(s, self.db.modalities) for s in self.relevance.predict(list(texts))]

    def rank(self, generations: Sequence[Generation], weights: Sequence[dict | None] | None = None, k: int = 10,
             ranking: str | None = None) -> list:
        weights = weights or [None] * len(generations)
        return [self.retriever.retrieve(g.beams, g.logprobs, w, k=k, ranking=ranking or self.ranking)
                for g, w in zip(generations, weights)]

    def recommend(self, texts: Sequence[str], k: int | Sequence[int] = 10, modality_selection: bool = True,
                  batch_size: int = 16) -> list[list[dict]]:
        """Requests -> per request the top-k tracks, best first: rank, track_id, score, matched groups (+ title,
        artist, album with a catalog). `k` is one depth for all requests or one per request; an empty request or
        k <= 0 raises RequestError before anything is generated."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        ks = [k] * len(texts) if isinstance(k, (int, np.integer)) else list(k)
        if len(ks) != len(texts):
            raise RequestError(f"{len(texts)} requests but {len(ks)} values of k")
        for text, depth in zip(texts, ks):
            check_request(text, depth)
        gens = self.generate(texts, batch_size=batch_size)
        weights = self.weights(texts) if modality_selection else [None] * len(texts)
        if self.artist_first:  # the answers are ranked deeper, then led by their top track's artist
            deep = [max(int(k), self.hybrid_depth) for k in ks]
            records = self._answers(texts, gens, weights, deep, modality_selection, batch_size)
            return [self._lead_artist_first(rec, int(k)) for rec, k in zip(records, ks)]
        return self._answers(texts, gens, weights, ks, modality_selection, batch_size)

    def _answers(self, texts, gens, weights, ks, modality_selection, batch_size) -> list[list[dict]]:
        if self.text_search is not None or self.members:
            return self._fused_records(texts, gens, weights, ks, modality_selection, batch_size)
        out = []
        for gen, w, depth in zip(gens, weights, ks):
            res = self.rank([gen], [w], int(depth))[0]
            out.append([self._record(rank, self.db.track_ids[int(r)], s, matched) for rank, (r, s, matched)
                        in enumerate(zip(res.rows, res.scores, res.matched), start=1)])
        return out

    def _record(self, rank: int, tid: str, score: float, matched: list, **extra) -> dict:
        rec = {"rank": rank, "track_id": tid, "score": round(float(score), 6), "matched": matched, **extra}
        if self.catalog is not None and tid in self.catalog:
            rec.update(self.catalog[tid])
        return rec

    def _ranked(self, gens, weights, depth) -> list[tuple[list[str], list]]:
        """Per request: this model's ranking, hybrid_depth deep, as (track ids, matched groups)."""
        out = []
        for gen, w in zip(gens, weights):
            res = self.rank([gen], [w], depth)[0]
            out.append(([self.db.track_ids[int(r)] for r in res.rows], list(res.matched)))
        return out

    def _fused_records(self, texts, gens, weights, ks, modality_selection, batch_size) -> list[list[dict]]:
        """This model's ranking, the ensemble members' (`generated_2`, ...) and the text retrievers', each
        hybrid_depth deep, fused by reciprocal ranks (docs/t2mr.md, rounds 12-14); `score` is the fused score,
        `sources` the lists that ranked the track, `matched` the first generated list's groups for it."""
        from inference.retrieval import reciprocal_rank_scores

        depth = max(self.hybrid_depth, max(ks))
        generated = {"generated": self._ranked(gens, weights, depth)}
        for j, member in enumerate(self.members, start=2):
            member_weights = member.weights(texts) if modality_selection else [None] * len(texts)
            generated[f"generated_{j}"] = member._ranked(member.generate(texts, batch_size=batch_size),
                                                         member_weights, depth)
        text_lists = self.text_search.rank(texts, depth) if self.text_search is not None else {}
        out = []
        for i, k in enumerate(ks):
            lists = {**{name: ranked[i][0] for name, ranked in generated.items()},
                     **{name: ranked[i] for name, ranked in text_lists.items()}}
            matched = {}
            for ranked in generated.values():
                for tid, groups in zip(*ranked[i]):
                    matched.setdefault(tid, groups)
            score = reciprocal_rank_scores(list(lists.values()), self.rrf_k)
            best = sorted(score, key=lambda t: -score[t])[:int(k)]
            out.append([self._record(rank, tid, score[tid], matched.get(tid, []),
                                     sources=[n for n, ranked in lists.items() if tid in ranked])
                        for rank, tid in enumerate(best, start=1)])
        return out

    def well_formed(self, generations: Sequence[Generation]) -> np.ndarray:
        """bool [n]: is each request's top beam a well-formed track ID of this database."""
        return np.array([parse_sequence(g.beams[0], self.db) is not None for g in generations])


def max_answer_tokens(db) -> int:
    """The longest answer a database allows: boundaries, every level of every group, `<ID-k>`, end of turn."""
    return 2 + sum(map(len, db.codebook_sizes.values())) + (db.dedup is not None) + 1


def _greedy_logprobs(scores, seqs: torch.Tensor) -> np.ndarray:
    """Sum of the chosen tokens' log-probabilities (greedy search), up to the first end-of-turn."""
    if not scores:
        return np.zeros(len(seqs))
    logp = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in scores], dim=1).cpu()  # [B, T, V]
    chosen = logp.gather(2, seqs[:, :logp.shape[1], None]).squeeze(2)
    chosen = torch.nan_to_num(chosen, neginf=0.0)
    return chosen.sum(1).numpy()


def _read_catalog(path: str | Path):
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=None)


def _catalog_records(table) -> dict[str, dict]:
    """track_id -> its title, artist and album (those the catalog has)."""
    cols = [c for c in ("title", "artist", "album") if c in table.column_names]
    data = {c: table.column(c).to_pylist() for c in ["track_id", *cols]}
    return {tid: {c: data[c][i] for c in cols} for i, tid in enumerate(data["track_id"])}


TABLE_COLUMNS = ("rank", "title", "artist", "track_id", "score", "matched")


def format_table(query: str, tracks: Sequence[dict]) -> str:
    """One query's records -> a plain-text table (title and artist are '-' without a catalog; hybrid answers add
    the rankings each track came from, `sources`)."""
    hybrid = any("sources" in t for t in tracks)
    columns = [*TABLE_COLUMNS, *(["sources"] if hybrid else [])]
    cells = [[str(t["rank"]), str(t.get("title") or "-"), str(t.get("artist") or "-"), str(t["track_id"]),
              f"{t['score']:.4f}", ",".join(t["matched"]) or "-", *([",".join(t.get("sources", []))] if hybrid else [])]
             for t in tracks]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    right = {0, 4}  # numbers
    line = lambda row: "  ".join(v.rjust(w) if i in right else v.ljust(w)
                                 for i, (v, w) in enumerate(zip(row, widths))).rstrip()
    body = [line(columns)] + [line(row) for row in cells] if cells else ["(no track)"]
    return "\n".join([f"query: {query}", *body])


@dataclass
class RecommenderOptions:
    """What a Recommender is loaded from: the options music3m-recommend and music3m-serve share."""

    bundle: str = field(metadata={"help": "bundle directory or Hub id (recipes/sft_3mtoken.py output)"})
    relevance: str | None = field(default=None, metadata={
        "help": "modality-relevance model dir, music3m-relevance's --out_dir (none: equal weights)"})
    catalog: str | None = field(default=None, metadata={"help": "catalog.parquet for titles and artists"})
    mode: Literal["order", "modality", "catalog", "none"] = field(default="catalog", metadata={
        "help": "decoding mask: order, modality, catalog (only IDs of existing tracks) or none"})
    num_beams: int = field(default=4, metadata={"help": "beams (merged by probability in retrieval)"})
    ranking: Literal["match", "beams"] = field(default="match", metadata={
        "help": "match: 3MTokenRec's hierarchical matching of the merged beams; beams: each beam's own track first, "
                "best beam first (the Spotify recipe's choice on validation: beams with 16 beams, docs/t2mr.md)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    hybrid: list[str] = field(default_factory=list, metadata={
        "help": "also search the catalog's text with these (bm25, dense) and fuse their rankings with the "
                "generated one by reciprocal ranks; needs --catalog. On Spotify's unseen playlist names the fusion "
                "with both gave P@10 0.0740 against 0.0494 for the three-level model alone (docs/t2mr.md)"})
    ensemble: list[str] = field(default_factory=list, metadata={
        "help": "more bundles (other seeds of the same recipe, or other tokenizers) that generate for each request "
                "too; their rankings are fused with this bundle's by reciprocal ranks (sources generated_2, ...). "
                "On Spotify's unseen playlist names two seeds fused gave P@10 0.0738 against 0.0680 / 0.0689 for "
                "each alone on validation, but 0.0571 / 0.0584 against a single-model mean of 0.0594 on evaluation "
                "(docs/t2mr.md round 14)"})
    hybrid_depth: int = field(default=64, metadata={
        "help": "with --hybrid or --ensemble: how deep each fused ranking is"})
    rrf_k: float = field(default=60.0, metadata={
        "help": "with --hybrid or --ensemble: a rank r (from 1) adds 1 / (rrf_k + r)"})
    artist_first: bool = field(default=False, metadata={
        "help": "put the answer's top track's artist in front (its tracks in the answer, --hybrid_depth deep, then "
                "its other tracks); needs --catalog. Chosen on Spotify's validation folds (docs/t2mr.md round 20)"})

    def load(self) -> Recommender:
        return Recommender.from_pretrained(self.bundle, self.relevance, device=self.device, mode=self.mode,
                                           num_beams=self.num_beams, ranking=self.ranking, catalog=self.catalog,
                                           hybrid=self.hybrid, ensemble=self.ensemble,
                                           hybrid_depth=self.hybrid_depth, rrf_k=self.rrf_k,
                                           artist_first=self.artist_first)


@dataclass
class RecommendConfig(RecommenderOptions):
    """Recommend tracks for text requests with a trained 3MTokenRec bundle."""

    query: list[str] = field(default_factory=list, metadata={"help": "one or more requests"})
    k: int = field(default=10, metadata={"help": "tracks per request"})
    format: Literal["table", "json"] = field(default="table", metadata={
        "help": "table: a readable table per query (rank, title, artist, track_id, score, matched modalities); "
                "json: one JSON line per query, {query, tracks: [records]}"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(RecommendConfig, argv)
    try:
        if not cfg.query:
            raise RequestError("give at least one --query")
        for text in cfg.query:
            check_request(text, cfg.k)
        results = cfg.load().recommend(cfg.query, k=cfg.k)
    except (BundleNotFoundError, InputNotFoundError, RequestError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for i, (text, tracks) in enumerate(zip(cfg.query, results)):
        if cfg.format == "json":
            print(json.dumps({"query": text, "tracks": tracks}, ensure_ascii=False))
        else:
            print(("\n" if i else "") + format_table(text, tracks))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
