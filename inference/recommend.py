"""Text in, tracks out: the 3MTokenRec recommender over an inference bundle (a directory or a Hub id).

    music3m-recommend --bundle BUNDLE --relevance runs/spotify/relevance --query "90s rock for a road trip" --k 10

In Python: `Recommender.from_pretrained(bundle, relevance=...).recommend([query], k=10)` -> per query a list of
{track_id, title, artist, score, matched}. Steps: chat prompt -> beam search under the mask of inference.decoding
-> inference.retrieval (modality weights from the relevance model, or equal) -> track records.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import parse_config
from inference.bundle import Bundle, load_bundle
from inference.decoding import MODES, MusicTokenLogitsProcessor, build_automaton
from inference.retrieval import Retriever, modality_weights, parse_sequence


@dataclass
class Generation:
    beams: list[list[str]]        # token strings of each returned beam (answer part), best first
    logprobs: list[float]         # sequence log-probability of each beam (length-normalised as `generate` scores)


class Recommender:
    """A loaded bundle (+ optional relevance model): generate track IDs for requests and map them to tracks."""

    def __init__(self, bundle: Bundle, relevance=None, mode: str = "catalog", num_beams: int = 4,
                 catalog: str | Path | None = None, device: str = "cpu", ranking: str = "match"):
        if mode not in (*MODES, "none"):
            raise ValueError(f"mode must be one of {MODES} or 'none', got {mode!r}")
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.tokenizer = bundle.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
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
        self.catalog = _read_catalog(catalog) if catalog else None

    @classmethod
    def from_pretrained(cls, bundle: str | Path, relevance: str | Path | None = None, device: str = "cpu",
                        **kwargs) -> Recommender:
        rel = None
        if relevance:
            from recipes.relevance import RelevanceModel

            rel = RelevanceModel.load(relevance, device=device)
        return cls(load_bundle(bundle), rel, device=device, **kwargs)

    def _end_of_turn_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ids.append(im_end)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    def prompts(self, texts: Sequence[str]) -> list[str]:
        system = self.bundle.config.get("system_prompt")
        chats = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": t}]
                 for t in texts]
        return [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]

    @torch.no_grad()
    def generate(self, texts: Sequence[str], num_beams: int | None = None, batch_size: int = 16) -> list[Generation]:
        """Requests -> the generated beams (token strings after the prompt) with their log-probabilities."""
        num_beams = num_beams or self.num_beams
        max_new = max_answer_tokens(self.db)
        out: list[Generation] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            enc = self.tokenizer(self.prompts(chunk), return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            processors = [] if self.automaton is None else [MusicTokenLogitsProcessor(self.automaton)]
            gen = self.model.generate(
                **enc, logits_processor=processors, max_new_tokens=max_new, do_sample=False, num_beams=num_beams,
                num_return_sequences=num_beams, eos_token_id=self.eot, pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True, output_scores=True)  # beams: needed for sequences_scores
            seqs = gen.sequences[:, enc["input_ids"].shape[1]:].cpu()
            if num_beams > 1:
                logprobs = gen.sequences_scores.float().cpu().numpy()
            else:
                logprobs = _greedy_logprobs(gen.scores, seqs)
            for i in range(len(chunk)):
                rows = range(i * num_beams, (i + 1) * num_beams)
                beams = [self._strings(seqs[r]) for r in rows]
                out.append(Generation(beams, [float(logprobs[r]) for r in rows]))
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

    def recommend(self, texts: Sequence[str], k: int = 10, modality_selection: bool = True) -> list[list[dict]]:
        """Requests -> per request the top-k tracks: track_id, score, matched groups (+ title, artist with a catalog)."""
        gens = self.generate(texts)
        results = self.rank(gens, self.weights(texts) if modality_selection else None, k)
        out = []
        for res in results:
            rows = []
            for r, s, matched in zip(res.rows, res.scores, res.matched):
                tid = self.db.track_ids[int(r)]
                rec = {"track_id": tid, "score": round(float(s), 6), "matched": matched}
                if self.catalog is not None and tid in self.catalog:
                    rec.update(self.catalog[tid])
                rows.append(rec)
            out.append(rows)
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


def _read_catalog(path: str | Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=None)
    cols = [c for c in ("title", "artist", "album") if c in table.column_names]
    data = {c: table.column(c).to_pylist() for c in ["track_id", *cols]}
    return {tid: {c: data[c][i] for c in cols} for i, tid in enumerate(data["track_id"])}


@dataclass
class RecommendConfig:
    """Recommend tracks for text requests with a trained 3MTokenRec bundle."""

    bundle: str = field(metadata={"help": "bundle directory or Hub id (recipes/sft_3mtoken.py output)"})
    query: list[str] = field(default_factory=list, metadata={"help": "one or more requests"})
    relevance: str | None = field(default=None, metadata={"help": "modality-relevance model dir (none: equal)"})
    catalog: str | None = field(default=None, metadata={"help": "catalog.parquet for titles and artists"})
    mode: str = field(default="catalog", metadata={"help": "decoding mask: order, modality, catalog or none"})
    num_beams: int = field(default=4, metadata={"help": "beams (merged by probability in retrieval)"})
    k: int = field(default=10, metadata={"help": "tracks per request"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(RecommendConfig, argv)
    if not cfg.query:
        raise SystemExit("give at least one --query")
    rec = Recommender.from_pretrained(cfg.bundle, cfg.relevance, device=cfg.device, mode=cfg.mode,
                                      num_beams=cfg.num_beams, catalog=cfg.catalog)
    for text, tracks in zip(cfg.query, rec.recommend(cfg.query, k=cfg.k)):
        print(json.dumps({"query": text, "tracks": tracks}, ensure_ascii=False))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
