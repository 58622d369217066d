"""Stage 3b, D_r: `run_dir/dqt/dqt.jsonl` -> `run_dir/dr/dr.jsonl` (+ .parquet): per request, 0-10 per modality.

    music3m-dr --run_dir runs/spotify

The LLM rates how much each of the nine modalities matters for a request (prompts/modality_relevance_v1.md) as strict
JSON with the keys AC..TC; `json_mode=schema` lets llama.cpp enforce it as a grammar. The relevance model
(3MTokenRec Sec. 2.3, recipes/relevance.py) trains on this file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from common.config import parse_config
from common.manifest import file_sha256, write_manifest
from common.registry import MODALITIES, MODALITY_NAMES
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

SCORE_MIN, SCORE_MAX = 0, 10  # 3MTokenRec Sec. 3.1: relevance scores from 0 to 10
DR_COLUMNS = ("query", "track_id", "split", *MODALITY_NAMES, "intent", "query_source", "model", "prompt_version",
              "seed")
# llama.cpp 0.3.36 turns this schema into a grammar; it ignores integer minimum/maximum, so the range is an enum.
SCORES_SCHEMA = {"type": "object",
                 "properties": {m: {"type": "integer", "enum": list(range(SCORE_MIN, SCORE_MAX + 1))}
                                for m in MODALITY_NAMES},
                 "required": list(MODALITY_NAMES), "additionalProperties": False}
# How a modality's kind reads in the prompt (the registry's titles and fields do the rest).
_KIND_WORDS = {"text": "text: {fields}", "audio": "the sound of the recording", "musical": "{fields}",
               "date": "release date", "collaborative": "what listeners play together (sessions, playlists)"}


@dataclass(kw_only=True)
class DrConfig(ClientConfig):
    """Generate D_r: 0-10 relevance of each modality for each D_qt request (3MTokenRec Sec. 3.1)."""

    run_dir: str = field(metadata={"help": "run directory (reads RUN_DIR/dqt/dqt.jsonl unless --dqt)"})
    dqt: str | None = field(default=None, metadata={
        "help": "D_qt JSONL (default RUN_DIR/dqt/dqt.jsonl); derived mode: several, comma-separated"})
    out_dir: str | None = field(default=None, metadata={"help": "output folder (default RUN_DIR/dr)"})
    max_queries: int | None = field(default=None, metadata={"help": "only the first N requests of D_qt"})
    prompt: str = field(default="modality_relevance_v1", metadata={
        "help": "prompt name in data_gen/synth/prompts, or a .md path"})
    overwrite: bool = field(default=False, metadata={"help": "drop earlier results in the output folder (cache kept)"})
    temperature: float = field(default=0.1, metadata={"help": "sampling temperature (low: a judgement, not prose)"})
    max_tokens: int = field(default=96, metadata={"help": "completion token limit per request"})
    mode: str = field(default="llm", metadata={
        "help": "llm: the LLM rates each request; derived: labels from the data, no LLM (a template request names "
                "fields of its track; a training playlist's tracks share codes of some modalities)",
        "choices": ["llm", "derived"]})
    token_db_dir: str | None = field(default=None, metadata={
        "help": "derived mode: token database whose level-1 codes measure how much a playlist's tracks agree per "
                "modality (playlist rows of D_qt)"})


def validate_scores(text: str) -> dict:
    """Model text -> {AC: int, ..., TC: int}; exact keys, integral numbers in 0..10, else InvalidOutput."""
    obj = parse_json_object(text)
    if set(obj) != set(MODALITY_NAMES):
        missing, extra = sorted(set(MODALITY_NAMES) - set(obj)), sorted(set(obj) - set(MODALITY_NAMES))
        raise InvalidOutput("wrong_keys", f"missing {missing}, unexpected {extra}")
    scores = {}
    for name in MODALITY_NAMES:
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise InvalidOutput("not_integer", f"{name}={value!r}")
        if not SCORE_MIN <= value <= SCORE_MAX:
            raise InvalidOutput("out_of_range", f"{name}={value!r}")
        scores[name] = int(value)
    return scores


def iter_jsonl(path: Path, limit: int | None) -> Iterator[tuple[int, dict]]:
    """(row number, record) of the first `limit` lines of a JSONL file, streamed."""
    with open(path, encoding="utf-8") as fh:
        yield from enumerate(json.loads(line) for line in islice(fh, limit))


def modality_lines() -> str:
    """One prompt line per registry modality: name, title, what it is made from."""
    lines = []
    for m in MODALITIES:
        what = _KIND_WORDS[m.kind].format(fields=", ".join(f.replace("_", " ") for f in m.fields))
        lines.append(f"- {m.name}: {m.title} ({what})")
    return "\n".join(lines)


def relevance_messages(prompt: Prompt, query: str) -> list[dict]:
    return prompt.messages(query=query.replace('"', "'"), modalities=modality_lines(),
                           keys=", ".join(MODALITY_NAMES))


NAMED, UNNAMED = 9, 1  # derived labels: a field the request names, one it does not


def derived_scores(query: str, phrases: dict[str, list[str]], extra_words: Sequence[str] = ()) -> dict[str, int]:
    """A template request -> 0-10 per modality: NAMED where it contains one of the track's phrases of that modality
    (data_gen.synth.words.modality_phrases), UNNAMED elsewhere; activity words count for SC and MC."""
    text = f" {' '.join(query.lower().split())} "
    scores = dict.fromkeys(MODALITY_NAMES, UNNAMED)
    for m, words in phrases.items():
        if m != "TC" and any(f" {w.lower()} " in text or (len(w) > 3 and w.lower() in text) for w in words if w):
            scores[m] = NAMED
    if any(f" {w} " in text for w in extra_words):
        scores["SC"] = scores["MC"] = max(scores["SC"], 6)
    return scores


def playlist_scores(rows: Sequence[int], codes: dict, base: dict[str, float]) -> dict[str, int]:
    """A playlist's catalog rows -> 0-10 per modality: how much more often than random two of its tracks share
    the level-1 code, (p - base) / (1 - base) scaled to 0..10; UNNAMED where the modality is absent."""
    import numpy as np

    out = dict.fromkeys(MODALITY_NAMES, UNNAMED)
    for m, c in codes.items():
        x = c[rows]
        x = x[x >= 0]
        if len(x) < 2:
            continue
        counts = np.bincount(x)
        p = float((counts * (counts - 1)).sum()) / (len(x) * (len(x) - 1))
        out[m] = int(round(10 * max(0.0, (p - base[m]) / max(1e-9, 1 - base[m]))))
    return out


def run_derived(cfg: DrConfig) -> dict:
    """D_r without an LLM: template rows scored by the fields they name, playlist rows by how much their tracks
    agree per modality (level-1 codes of --token_db_dir)."""
    import numpy as np

    from data_gen.synth.words import ACTIVITIES, catalog_phrases

    paths = [Path(p) for p in (cfg.dqt or str(Path(cfg.run_dir) / "dqt" / "dqt.jsonl")).split(",")]
    out_dir = Path(cfg.out_dir or Path(cfg.run_dir) / "dr")
    dqt = [q for path in paths for _, q in iter_jsonl(path, cfg.max_queries)]
    catalog = Path(cfg.run_dir) / "catalog.parquet"
    wanted = {q["track_id"] for q in dqt}
    phrases = catalog_phrases(catalog, cfg.run_dir, wanted)
    activity_words = sorted({w for ws in ACTIVITIES.values() for w in ws})
    codes, base, members = {}, {}, {}
    if cfg.token_db_dir:
        # the level-1 codes straight from token_db.parquet (columns track_id, <MOD>_1, ...): data_gen comes before
        # tokenizer_ext in the pipeline, so it reads the file, not the TokenDB class
        import pyarrow.parquet as pq

        table = pq.read_table(Path(cfg.token_db_dir) / "token_db.parquet")
        row_of = {t: i for i, t in enumerate(table.column("track_id").to_pylist())}
        for m in MODALITY_NAMES:
            if f"{m}_1" in table.column_names:
                codes[m] = table.column(f"{m}_1").to_numpy().astype(np.int64)
                present = codes[m][codes[m] >= 0]
                counts = np.bincount(present) if len(present) else np.zeros(1)
                base[m] = float((counts * (counts - 1)).sum()) / max(1, len(present) * (len(present) - 1))
        for q in dqt:
            if q.get("source") == "playlists" and q["track_id"] in row_of:
                members.setdefault(q["query"], []).append(row_of[q["track_id"]])
    rows, skipped, by_playlist = [], Counter(), {}
    for q in dqt:
        if q.get("source") == "playlists":
            if not codes:
                skipped["playlist_row_without_token_db"] += 1
                continue
            if q["query"] not in by_playlist:
                by_playlist[q["query"]] = playlist_scores(members.get(q["query"], []), codes, base)
                rows.append({"query": q["query"], "track_id": q["track_id"], "split": q.get("split", "train"),
                             **by_playlist[q["query"]], "intent": q.get("intent"), "query_source": "playlists"})
            continue
        if q["track_id"] not in phrases:
            skipped["track_not_in_catalog"] += 1
            continue
        rows.append({"query": q["query"], "track_id": q["track_id"], "split": q.get("split", "train"),
                     **derived_scores(q["query"], phrases[q["track_id"]], activity_words), "intent": q.get("intent"),
                     "query_source": q.get("source")})
    rows = [{**r, "model": "derived", "prompt_version": "derived@1", "seed": cfg.seed} for r in rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_dataset(rows, out_dir / "dr.jsonl", DR_COLUMNS)
    counts = {"queries": len(dqt), "rows": len(rows), "failures": 0, "failures_by_reason": {},
              "skipped": dict(skipped), "playlists": len(by_playlist),
              "by_split": dict(Counter(r["split"] for r in rows)),
              "mean_scores": {m: round(sum(r[m] for r in rows) / len(rows), 3) for m in MODALITY_NAMES} if rows else {},
              "distinct_score_vectors": len({tuple(r[m] for m in MODALITY_NAMES) for r in rows})}
    write_manifest(out_dir / "dr_manifest.json", "dr", cfg,
                   inputs={**{f"dqt_{i}": p for i, p in enumerate(paths)},
                           "token_db": Path(cfg.token_db_dir) / "token_db.parquet" if cfg.token_db_dir else None},
                   counts=counts, extra={"outputs": {"dataset": str(out_dir / "dr.jsonl")}})
    return {"counts": counts, "report": {}, "out_dir": str(out_dir)}


def run(cfg: DrConfig) -> dict:
    if cfg.mode == "derived":
        return run_derived(cfg)
    dqt_path = Path(cfg.dqt or Path(cfg.run_dir) / "dqt" / "dqt.jsonl")
    out_dir = Path(cfg.out_dir or Path(cfg.run_dir) / "dr")
    prompt = load_prompt(cfg.prompt)
    settings = ("seed", "temperature", "top_p", "max_tokens", "json_mode", "max_attempts")
    state = {"dqt_sha256": file_sha256(dqt_path), "prompt_version": prompt.version, "model": cfg.model,
             **{k: getattr(cfg, k) for k in settings}}
    check_run_state(out_dir, state, cfg.overwrite)
    with open(dqt_path, "rb") as fh:
        total = sum(1 for _ in islice(fh, cfg.max_queries))
    jobs = (Job(f"{i}:{q['track_id']}", i, relevance_messages(prompt, q["query"]),
                {"query": q["query"], "track_id": q["track_id"], "split": q["split"], "intent": q.get("intent"),
                 "query_source": q.get("source")})
            for i, q in iter_jsonl(dqt_path, cfg.max_queries))
    report = generate(jobs, validate_scores, cfg, out_dir, response_format(cfg, SCORES_SCHEMA), total=total)

    items, failures = read_results(out_dir)
    rows = [{**r, "model": cfg.model, "prompt_version": prompt.version} for r in items]
    write_dataset(rows, out_dir / "dr.jsonl", DR_COLUMNS)
    counts = {"queries": total, "rows": len(rows), "failures": len(failures),
              "failures_by_reason": dict(Counter(f["reason"] for f in failures)),
              "by_split": dict(Counter(r["split"] for r in rows)),
              "mean_scores": {m: round(sum(r[m] for r in rows) / len(rows), 3) for m in MODALITY_NAMES} if rows else {},
              # a judging model gives different requests different profiles; a copying one repeats itself
              "distinct_score_vectors": len({tuple(r[m] for m in MODALITY_NAMES) for r in rows})}
    write_manifest(out_dir / "dr_manifest.json", "dr", cfg, inputs={"dqt": dqt_path}, counts=counts,
                   extra={"prompt_version": prompt.version, "generation": report,
                          "generation_history": run_history(out_dir),
                          "response_format": response_format(cfg, SCORES_SCHEMA),
                          "outputs": {"dataset": str(out_dir / "dr.jsonl"),
                                      "failures": str(out_dir / "failures.jsonl")}})
    return {"counts": counts, "report": report, "out_dir": str(out_dir)}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(DrConfig, argv)
    result = run_generation_command(run, cfg)
    c = result["counts"]
    print(f"D_r: {c['rows']} of {c['queries']} requests scored, {c['failures']} failures {c['failures_by_reason']} "
          f"-> {result['out_dir']}/dr.jsonl")


if __name__ == "__main__":
    main()
