"""Stage 3b, D_r: `run_dir/dqt/dqt.jsonl` -> `run_dir/dr/dr.jsonl` (+ .parquet): per request, 0-10 per modality.

    python -m data_gen.dr --run_dir runs/spotify [--dqt runs/spotify/dqt/dqt.jsonl]

For every D_qt request the LLM rates how much each of the nine modalities (names and descriptions from
data_gen/registry.py) matters for answering it (prompts/modality_relevance_v1.md), as strict JSON with exactly
the keys AC..TC and integers 0..10. With json_mode=schema the endpoint is given a JSON schema (llama.cpp turns it
into a grammar, so even a 135M model answers in form). Columns: query, track_id, split, AC..TC, intent,
query_source, model, prompt_version, seed. The relevance model (3MTokenRec Sec. 2.3) trains on this file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.config import parse_config
from data_gen.llm_client import ClientConfig, InvalidOutput, Job, generate, parse_json_object, \
    response_format, run_generation_command, run_history
from data_gen.llm_store import check_run_state, read_results, write_dataset
from data_gen.manifest import file_sha256, write_manifest
from data_gen.prompts import Prompt, load_prompt
from data_gen.registry import MODALITIES, MODALITY_NAMES

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
    dqt: str | None = field(default=None, metadata={"help": "D_qt JSONL (default RUN_DIR/dqt/dqt.jsonl)"})
    out_dir: str | None = field(default=None, metadata={"help": "output folder (default RUN_DIR/dr)"})
    max_queries: int | None = field(default=None, metadata={"help": "only the first N requests of D_qt"})
    prompt: str = field(default="modality_relevance_v1", metadata={
        "help": "prompt name in data_gen/prompts, or a .md path"})
    overwrite: bool = field(default=False, metadata={"help": "drop earlier results in the output folder (cache kept)"})
    temperature: float = field(default=0.1, metadata={"help": "sampling temperature (low: a judgement, not prose)"})
    max_tokens: int = field(default=96, metadata={"help": "completion token limit per request"})


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


def run(cfg: DrConfig) -> dict:
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
