"""Stage 3a, D_qt: `run_dir/catalog.parquet` -> `run_dir/dqt/dqt.jsonl` (+ .parquet): natural requests per track.

    music3m-dqt --run_dir runs/spotify --num_queries 3 [--mode llm|template|mix]    (LLM: music3m-llm-server start)

Each (track, slot) gets an intent (track_facts) and one request, written by the LLM (prompts/query_generation_v1.md)
or by query_templates. `split` is the track's side of data_gen.catalog.track_split (same test_fraction and seed as the
tokenizer), so queries of test tracks stay out of training. Resumable and cached; failures go to dqt/failures.jsonl.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from common.config import parse_config
from common.manifest import file_sha256, write_manifest
from common.records import normalize_request
from data_gen.catalog.playlists import read_playlists
from data_gen.catalog.reader import read_catalog
from data_gen.catalog.track_split import split_tracks
from data_gen.synth import query_templates
from data_gen.synth.llm_client import (
    ClientConfig,
    InvalidOutput,
    Job,
    generate,
    parse_json_object,
    response_format,
    run_generation_command,
    run_history,
)
from data_gen.synth.llm_store import check_run_state, read_results, write_dataset
from data_gen.synth.prompts import Prompt, load_prompt
from data_gen.synth.query_templates import template_query
from data_gen.synth.track_facts import (
    FACT_COLUMNS,
    INTENT_HELP,
    INTENTS,
    OPT_IN_INTENTS,
    TrackFacts,
    describe,
    intent_for,
    stable_hash,
    track_facts,
)
from data_gen.synth.words import load_audio_scale

DQT_COLUMNS = ("track_id", "query", "intent", "source", "model", "prompt_version", "seed", "split")
# No maxLength: llama.cpp unrolls it into a deep grammar; max_tokens bounds the length instead.
QUERY_SCHEMA = {"type": "object", "properties": {"query": {"type": "string", "minLength": 3}},
                "required": ["query"], "additionalProperties": False}
MAX_QUERY_WORDS = 40
_LABEL = re.compile(r"^[A-Za-z][A-Za-z ()]{0,40}:\s")


@dataclass(kw_only=True)
class DqtConfig(ClientConfig):
    """Generate D_qt: natural-language requests per catalog track (3MTokenRec Sec. 3.1)."""

    run_dir: str = field(metadata={"help": "run directory holding catalog.parquet"})
    catalog: str | None = field(default=None, metadata={"help": "catalog parquet (default RUN_DIR/catalog.parquet)"})
    out_dir: str | None = field(default=None, metadata={"help": "output folder (default RUN_DIR/dqt)"})
    num_queries: int = field(default=3, metadata={"help": "requests per track (one intent per query slot)"})
    intents: str | None = field(default=None, metadata={
        "help": "only these intents, comma-separated (e.g. artist: one request naming the artist per slot); "
                f"of {', '.join(INTENTS)}, or the opt-in {', '.join(OPT_IN_INTENTS)} (the album by its name; "
                "the artist, song or title words inside a longer playlist name). "
                "Tracks that support none of them get no row and are counted as skipped_no_intent"})
    max_tracks: int | None = field(default=None, metadata={"help": "only the first N tracks in catalog order"})
    mode: str = field(default="llm", metadata={
        "help": "who writes the requests: the LLM, data_gen/synth/query_templates.py, a mix of both, or playlists "
                "(each playlist's name is a request for each of its tracks; give the training playlists only)",
        "choices": ["llm", "template", "mix", "playlists"]})
    templates: str = field(default="basic", metadata={
        "help": "template style: basic (sentences) or rich (also playlist-style names from tags, artist, year, mood "
                "words of the audio features, activities)", "choices": ["basic", "rich"]})
    playlists: str | None = field(default=None, metadata={
        "help": "mode playlists: playlists JSONL (playlist_id, name, tracks), e.g. RUN_DIR/splits/"
                "playlists_train.jsonl; never the evaluation playlists"})
    exclude_requests: str | None = field(default=None, metadata={
        "help": "playlists JSONL file(s), comma-separated: drop every request equal (lower case, words only) to one "
                "of their names, e.g. RUN_DIR/splits/playlists_eval.jsonl, so that no evaluation request is trained "
                "on; the dropped rows are counted as excluded_requests"})
    template_share: float = field(default=0.5, metadata={"help": "mix: share of query slots written by templates"})
    prompt: str = field(default="query_generation_v1", metadata={
        "help": "prompt name in data_gen/synth/prompts, or a .md path"})
    max_text_chars: int = field(default=400, metadata={
        "help": "clip song facts, biographies and roles to this many characters (context budget)"})
    test_fraction: float = field(default=0.2, metadata={
        "help": "share of test tracks (data_gen.catalog.track_split; must match the tokenizer's 80/20 split)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the track split (must match the tokenizer's)"})
    overwrite: bool = field(default=False, metadata={"help": "drop earlier results in the output folder (cache kept)"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature (varied wording)"})
    max_tokens: int = field(default=64, metadata={"help": "completion token limit per request"})


def validate_query(text: str) -> dict:
    """Model text -> {"query": ...}; raises InvalidOutput for prose, other keys, empty or overlong requests."""
    obj = parse_json_object(text)
    if set(obj) != {"query"}:
        raise InvalidOutput("wrong_keys", f"keys {sorted(obj)}")
    if not isinstance(obj["query"], str):
        raise InvalidOutput("not_string", repr(obj["query"])[:80])
    query = " ".join(obj["query"].split()).strip(" \"'")
    if not query:
        raise InvalidOutput("empty_query")
    if len(query.split()) > MAX_QUERY_WORDS:
        raise InvalidOutput("too_long", f"{len(query.split())} words")
    if len(re.findall(r"[^\W\d_]{2,}", query)) < 2:  # "...", "2018", "MUSIC": not a request
        raise InvalidOutput("too_short", query[:80])
    if _LABEL.match(query):  # "genre: folk", "Mood: calm": a line of the prompt, not a request
        raise InvalidOutput("copied_label", query[:80])
    if re.search(r"\[[^\]]*\]", query):  # "songs by [artist]": an unfilled slot
        raise InvalidOutput("placeholder", query[:80])
    return {"query": query}


@dataclass(frozen=True)
class Slot:
    order: int
    key: str
    facts: TrackFacts
    slot: int
    intent: str
    source: str
    split: str


def plan(cfg: DqtConfig, stats: Counter | None = None) -> Iterator[Slot]:
    """Every (track, query slot) of the run, in dataset order, with its intent, source and split. `stats` counts
    the tracks that get no slot (skipped_no_intent: none of --intents applies)."""
    catalog = cfg.catalog or str(Path(cfg.run_dir) / "catalog.parquet")
    audio = load_audio_scale(cfg.run_dir, catalog) if cfg.templates == "rich" else None
    allowed = allowed_intents(cfg.intents)
    seen = 0
    for batch in read_catalog(catalog, columns=[*FACT_COLUMNS, "audio_features"]):
        rows = batch.to_pylist()
        is_test = split_tracks([r["track_id"] for r in rows], cfg.test_fraction, cfg.split_seed)
        for row, test in zip(rows, is_test):
            if cfg.max_tracks is not None and seen >= cfg.max_tracks:
                return
            facts = track_facts(row, cfg.max_text_chars, audio=audio)
            for slot in range(cfg.num_queries):
                intent = intent_for(facts, slot, cfg.seed, allowed)
                if intent is None:
                    if stats is not None:
                        stats["skipped_no_intent"] += 1
                    break
                mixed = stable_hash("mix", cfg.seed, facts.track_id, slot) / 2**64 < cfg.template_share
                use_template = cfg.mode == "template" or (cfg.mode == "mix" and mixed)
                yield Slot(seen * cfg.num_queries + slot, f"{facts.track_id}#{slot}", facts, slot,
                           intent, "template" if use_template else "llm",
                           "test" if test else "train")
            seen += 1


def allowed_intents(spec: str | None) -> tuple[str, ...] | None:
    """--intents "artist,genre" -> ("artist", "genre"); None keeps every intent. Unknown names are an error."""
    if spec is None:
        return None
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    known = INTENTS + OPT_IN_INTENTS
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise SystemExit(f"--intents: unknown intent(s) {unknown or spec!r}; choose from {', '.join(known)}")
    return names


def query_messages(prompt: Prompt, facts: TrackFacts, intent: str) -> list[dict]:
    listed = INTENTS + ((intent,) if intent not in INTENTS else ())
    intents = "\n".join(f"- {name}: {INTENT_HELP[name]}" for name in listed)
    return prompt.messages(facts=describe(facts), intents=intents, intent=intent, intent_help=INTENT_HELP[intent])


def templates_version() -> str:
    return "query_templates@" + hashlib.sha256(Path(query_templates.__file__).read_bytes()).hexdigest()[:8]


def dataset_rows(cfg: DqtConfig, prompt: Prompt, items: list[dict], stats: Counter | None = None) -> list[dict]:
    """The D_qt rows in plan order: template slots written now, LLM slots from items.jsonl (failed ones absent)."""
    by_key = {r["key"]: r for r in items}
    rows, tmpl_version = [], templates_version()
    for s in tqdm(plan(cfg, stats), desc="D_qt rows", unit="request", file=sys.stderr, disable=None, mininterval=2):
        if s.source == "template":
            rows.append({"track_id": s.facts.track_id,
                         "query": template_query(s.facts, s.intent, s.slot, cfg.seed, cfg.templates),
                         "intent": s.intent, "source": "template", "model": "template",
                         "prompt_version": tmpl_version, "seed": cfg.seed, "split": s.split})
        elif s.key in by_key:
            rows.append({**by_key[s.key], "source": "llm", "model": cfg.model, "prompt_version": prompt.version})
    return rows


def exclude_requests(rows: list[dict], spec: str | None) -> tuple[list[dict], int]:
    """Drop the rows whose request equals a playlist name of the --exclude_requests files -> (kept rows, dropped)."""
    if not spec:
        return rows, 0
    names = {normalize_request(p.name) for path in spec.split(",") if path.strip()
             for p in read_playlists(path.strip())}
    kept = [r for r in rows if normalize_request(r["query"]) not in names]
    return kept, len(rows) - len(kept)


def playlist_rows(path: str | Path, cfg: DqtConfig) -> tuple[list[dict], dict]:
    """Playlists JSONL -> one D_qt row per (playlist, track): the name is the request (all in the train split)."""
    rows, empty = [], 0
    for p in read_playlists(path):
        if not p.tracks:
            empty += 1
        rows += [{"track_id": t, "query": p.name, "intent": "playlist", "source": "playlists",
                  "model": "playlists", "prompt_version": f"playlists@{file_sha256(path)[:8]}", "seed": cfg.seed,
                  "split": "train"} for t in p.tracks]
    return rows, {"playlists": len({r["query"] for r in rows}), "empty_playlists": empty}


def run(cfg: DqtConfig) -> dict:
    out_dir = Path(cfg.out_dir or Path(cfg.run_dir) / "dqt")
    if cfg.mode == "playlists":
        if not cfg.playlists:
            raise SystemExit("--mode playlists needs --playlists FILE (the training playlists)")
        rows, info = playlist_rows(cfg.playlists, cfg)
        rows, info["excluded_requests"] = exclude_requests(rows, cfg.exclude_requests)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_dataset(rows, out_dir / "dqt.jsonl", DQT_COLUMNS)
        counts = {"rows": len(rows), "llm_failures": 0, "tracks": len({r["track_id"] for r in rows}), **info,
                  "by_source": {"playlists": len(rows)}}
        write_manifest(out_dir / "dqt_manifest.json", "dqt", cfg, inputs={"playlists": Path(cfg.playlists)},
                       counts=counts, extra={"outputs": {"dataset": str(out_dir / "dqt.jsonl")}})
        return {"counts": counts, "report": {}, "out_dir": str(out_dir)}
    catalog = Path(cfg.catalog or Path(cfg.run_dir) / "catalog.parquet")
    prompt = load_prompt(cfg.prompt)
    state = {"catalog_sha256": file_sha256(catalog), "prompt_version": prompt.version, "model": cfg.model,
             **{k: getattr(cfg, k) for k in ("seed", "num_queries", "mode", "templates", "template_share",
                                             "temperature", "top_p",
                                             "max_tokens", "json_mode", "max_attempts", "max_text_chars",
                                             "test_fraction", "split_seed")},
             **({"intents": cfg.intents} if cfg.intents else {})}  # absent when unset: older runs stay resumable
    check_run_state(out_dir, state, cfg.overwrite)
    jobs = (Job(s.key, s.order, query_messages(prompt, s.facts, s.intent),
                {"track_id": s.facts.track_id, "intent": s.intent, "split": s.split})
            for s in plan(cfg) if s.source == "llm")
    tracks = pq.ParquetFile(catalog).metadata.num_rows
    tracks = tracks if cfg.max_tracks is None else min(tracks, cfg.max_tracks)
    total = tracks * cfg.num_queries if cfg.mode == "llm" else None
    report = generate(jobs, validate_query, cfg, out_dir, response_format(cfg, QUERY_SCHEMA), total=total)

    items, failures = read_results(out_dir)
    stats = Counter(skipped_no_intent=0)
    rows = dataset_rows(cfg, prompt, items, stats)
    rows, excluded = exclude_requests(rows, cfg.exclude_requests)
    write_dataset(rows, out_dir / "dqt.jsonl", DQT_COLUMNS)
    counts = {"rows": len(rows), "llm_failures": len(failures), "tracks": len({r["track_id"] for r in rows}),
              "skipped_no_intent": stats["skipped_no_intent"], "excluded_requests": excluded,
              **{f"by_{c}": dict(Counter(r[c] for r in rows)) for c in ("source", "intent", "split")}}
    write_manifest(out_dir / "dqt_manifest.json", "dqt", cfg, inputs={"catalog": catalog}, counts=counts,
                   extra={"prompt_version": prompt.version, "templates_version": templates_version(),
                          "split": {"source": "data_gen.catalog.track_split.split_tracks",
                                    "test_fraction": cfg.test_fraction, "seed": cfg.split_seed},
                          "generation": report, "generation_history": run_history(out_dir),
                          "outputs": {"dataset": str(out_dir / "dqt.jsonl"),
                                      "failures": str(out_dir / "failures.jsonl")}})
    return {"counts": counts, "report": report, "out_dir": str(out_dir)}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(DqtConfig, argv)
    result = run_generation_command(run, cfg)
    c = result["counts"]
    skipped = f", {c['skipped_no_intent']} tracks without any of --intents" if c.get("skipped_no_intent") else ""
    skipped += f", {c['excluded_requests']} rows equal to an excluded request" if c.get("excluded_requests") else ""
    print(f"D_qt: {c['rows']} requests for {c['tracks']} tracks {c['by_source']}, {c['llm_failures']} failures"
          f"{skipped} -> {result['out_dir']}/dqt.jsonl")


if __name__ == "__main__":
    main()
