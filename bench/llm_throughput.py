"""Throughput of the local LLM server alone vs. through data_gen.synth.llm_client, on the same D_qt prompts.

    python bench/llm_throughput.py --run_dir runs/spotify_llm --num_requests 64 --concurrency 1 4
    python bench/llm_throughput.py --run_dir runs/spotify_llm --base_url http://127.0.0.1:8765/v1  # a running server

Standalone: raw HTTP POSTs to /v1/chat/completions (urllib in a thread pool, no retries, no cache, no validation).
Client: the generation engine (async openai client, semaphore, validation, result logs; cache off, one attempt),
with identical requests (same messages, sampling params and seeds), so both produce the same tokens. Prints
requests/s and completion tokens/s of each, and the ratio client / standalone; `--out` saves them as JSON.
Each path is measured `--repeats` times, interleaved, and the best run of each is kept: on a machine shared with
other work the slowest runs measure the neighbours, not the code.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from common.config import parse_config
from data_gen.synth.dqt import QUERY_SCHEMA, DqtConfig, plan, query_messages, validate_query
from data_gen.synth.llm_client import Engine, Job, response_format
from data_gen.synth.llm_server import LocalLLMServer, ServerConfig
from data_gen.synth.prompts import load_prompt
from data_gen.synth.track_facts import stable_hash


@dataclass
class BenchConfig:
    """Measure LLM server throughput standalone and through the generation client."""

    run_dir: str = field(metadata={"help": "run directory with catalog.parquet (prompts are built from its tracks)"})
    num_requests: int = field(default=64, metadata={"help": "requests per measurement (one D_qt prompt per track)"})
    concurrency: list[int] = field(default_factory=lambda: [1, 4], metadata={"help": "concurrency levels to measure"})
    repeats: int = field(default=2, metadata={
        "help": "measurements per path, interleaved standalone/client; the best of each is kept (shared machines)"})
    base_url: str | None = field(default=None, metadata={"help": "a running endpoint (default: start a local server)"})
    model: str = field(default="smollm2", metadata={"help": "model name sent"})
    n_threads: int = field(default=0, metadata={"help": "threads of a server started here (0: all cores)"})
    json_mode: str = field(default="schema", metadata={"help": "schema | json_object | off"})
    max_tokens: int = field(default=64, metadata={"help": "completion token limit"})
    seed: int = field(default=0, metadata={"help": "seed of the requests"})
    out: str | None = field(default=None, metadata={"help": "write the results as JSON here"})


def dqt_config(cfg: BenchConfig, base_url: str) -> DqtConfig:
    """The D_qt settings of the benchmark: one query for each of the first num_requests tracks."""
    return DqtConfig(run_dir=cfg.run_dir, base_url=base_url, num_queries=1, max_tracks=cfg.num_requests,
                     seed=cfg.seed, model=cfg.model, json_mode=cfg.json_mode, max_tokens=cfg.max_tokens)


def build_requests(dqt: DqtConfig) -> tuple[list[Job], list[dict]]:
    """The D_qt slots -> (engine jobs, the identical raw request bodies with attempt-0 seeds)."""
    prompt = load_prompt(dqt.prompt)
    jobs = [Job(s.key, s.order, query_messages(prompt, s.facts, s.intent)) for s in plan(dqt)]
    fmt = response_format(dqt, QUERY_SCHEMA)
    bodies = [{"model": dqt.model, "messages": j.messages, "temperature": dqt.temperature, "top_p": dqt.top_p,
               "max_tokens": dqt.max_tokens, "seed": stable_hash("attempt", dqt.seed, j.key, 0) % 2**31,
               **({"response_format": fmt} if fmt else {})} for j in jobs]
    return jobs, bodies


def standalone(base_url: str, bodies: list[dict], concurrency: int) -> dict:
    def post(body: dict) -> int:
        req = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310 (local URL)
            return json.loads(resp.read())["usage"]["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(post, bodies))
    wall = time.perf_counter() - start
    return {"requests": len(bodies), "completion_tokens": tokens, "wall_s": round(wall, 3),
            "requests_per_s": round(len(bodies) / wall, 3), "completion_tokens_per_s": round(tokens / wall, 2)}


def through_client(dqt: DqtConfig, jobs: list[Job], concurrency: int) -> dict:
    """The same requests through the engine: cache off and one attempt, so it sends exactly one per job."""
    client_cfg = replace(dqt, concurrency=concurrency, max_attempts=1, cache=False, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(client_cfg, tmp, validate_query, response_format(client_cfg, QUERY_SCHEMA))
        report = asyncio.run(engine.run(jobs, total=len(jobs)))
    return {k: report[k] for k in ("requests_sent", "completion_tokens", "wall_s", "requests_per_s",
                                   "completion_tokens_per_s", "items_ok", "items_failed")}


def measure(cfg: BenchConfig, base_url: str) -> list[dict]:
    dqt = dqt_config(cfg, base_url)
    jobs, bodies = build_requests(dqt)
    standalone(base_url, bodies[:2], 1)  # warm-up: first requests pay for model page-in
    rows = []
    for c in cfg.concurrency:
        raws, clis = [], []
        for _ in range(cfg.repeats):  # interleaved, so that load from other processes hits both paths alike
            raws.append(standalone(base_url, bodies, c))
            clis.append(through_client(dqt, jobs, c))
        raw = max(raws, key=lambda r: r["requests_per_s"])
        cli = max(clis, key=lambda r: r["requests_per_s"])
        rows.append({"concurrency": c, "standalone": raw, "client": cli,
                     "all_runs": {"standalone": raws, "client": clis},
                     "ratio_requests": round(cli["requests_per_s"] / raw["requests_per_s"], 3),
                     "ratio_tokens": round(cli["completion_tokens_per_s"] / raw["completion_tokens_per_s"], 3)})
        print(f"concurrency {c}: standalone {raw['requests_per_s']:.2f} req/s {raw['completion_tokens_per_s']:.1f} "
              f"tok/s | client {cli['requests_per_s']:.2f} req/s {cli['completion_tokens_per_s']:.1f} tok/s | "
              f"client/standalone {rows[-1]['ratio_requests']:.2f} (req) {rows[-1]['ratio_tokens']:.2f} (tok)")
    return rows


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(BenchConfig, argv)
    if cfg.base_url:
        rows = measure(cfg, cfg.base_url)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server_cfg = ServerConfig(port=0, n_threads=cfg.n_threads, model_alias=cfg.model,
                                      pidfile=str(Path(tmp) / "server.pid"))
            with LocalLLMServer(server_cfg) as server:
                rows = measure(cfg, server.base_url)
    if cfg.out:
        Path(cfg.out).write_text(json.dumps({"config": cfg.__dict__, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
