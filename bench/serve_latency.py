"""Serving latency: music3m-serve's batched HTTP endpoint against answering the same requests one by one in-process.

    python -m bench.serve_latency --bundle runs/demo/sft/SmolLM2-135M-Instruct-3MTokenRec \
        --catalog runs/demo/catalog.parquet --requests 64 --concurrency 1 4 16

`python -m inference.serve` starts on the bundle (a free port on 127.0.0.1) next to an in-process Recommender on the
same bundle. The arms: the baseline (the requests one by one through `Recommender.recommend`, measured in the same
run) and the server at each concurrency level C (the same requests over HTTP with httpx2, at most C in flight). The
arms alternate for --repeats rounds, so that a busy spell of the machine hits all of them; the idle side costs no
CPU. Per arm: the median requests/s over the rounds, p50 / p95 latency over all its requests, the generate calls
per round, and requests/s over the baseline's (the ratio column).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bench import REQUESTS
from common.config import parse_config
from eval.common import markdown_table, write_json
from inference.bundle import BundleNotFoundError
from inference.recommend import InputNotFoundError, Recommender
from inference.serve import spawn_server


@dataclass
class ServeLatencyConfig:
    """Requests/s and p50/p95 latency of music3m-serve per concurrency level, against one-by-one in-process calls."""

    bundle: str = field(default="runs/demo/sft/SmolLM2-135M-Instruct-3MTokenRec", metadata={
        "help": "bundle directory or Hub id (make demo writes the default)"})
    catalog: str | None = field(default=None, metadata={"help": "catalog.parquet: titles and artists in the records"})
    requests: int = field(default=64, metadata={"help": "requests per arm and round"})
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={
        "help": "concurrency levels of the server arms: requests in flight at once"})
    repeats: int = field(default=3, metadata={"help": "rounds of alternating arms (medians reported)"})
    k: int = field(default=10, metadata={"help": "tracks per request"})
    num_beams: int = field(default=4, metadata={"help": "beams per request"})
    mode: str = field(default="catalog", metadata={"help": "decoding mask"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    max_batch_size: int = field(default=16, metadata={"help": "server knob: most requests per generate call"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "server knob: how long a batch waits for company"})
    threads: int = field(default=0, metadata={
        "help": "torch threads of both sides (0: torch's default; on a machine shared with other jobs 1 is steadier)"})
    warmup: int = field(default=2, metadata={"help": "untimed requests per side before the first round"})
    out: str | None = field(default=None, metadata={"help": "also write the results as JSON here"})


def one_by_one(rec: Recommender, queries: list[str], k: int) -> dict:
    """The baseline: each request alone through the in-process Recommender."""
    latencies = []
    start = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter()
        rec.recommend([q], k=k)
        latencies.append(time.perf_counter() - t0)
    return {"wall_s": time.perf_counter() - start, "latencies_s": latencies, "generate_calls": len(queries)}


async def _send_all(url: str, queries: list[str], k: int, concurrency: int) -> dict:
    import httpx2

    gate = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=url, timeout=600.0, limits=limits) as client:
        async def one(query: str) -> float:
            async with gate:
                t0 = time.perf_counter()
                answer = await client.post("/recommend", json={"query": query, "k": k})
                answer.raise_for_status()
                return time.perf_counter() - t0

        calls = (await client.get("/health")).json()["generate_calls"]
        start = time.perf_counter()
        latencies = await asyncio.gather(*(one(q) for q in queries))
        wall = time.perf_counter() - start
        calls = (await client.get("/health")).json()["generate_calls"] - calls
    return {"wall_s": wall, "latencies_s": list(latencies), "generate_calls": calls}


def summarize(arm: str, concurrency: int, rounds: list[dict], base_rps: float | None) -> dict:
    rps = statistics.median(len(r["latencies_s"]) / r["wall_s"] for r in rounds)
    ms = np.concatenate([r["latencies_s"] for r in rounds]) * 1e3
    return {"arm": arm, "concurrency": concurrency, "requests_per_round": len(rounds[0]["latencies_s"]),
            "requests_per_s": rps, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "generate_calls_per_round": statistics.median(r["generate_calls"] for r in rounds),
            "vs_baseline": rps / (base_rps or rps), "rounds": rounds}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ServeLatencyConfig, argv)
    queries = [REQUESTS[i % len(REQUESTS)] for i in range(cfg.requests)]
    env = {}
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
        env = {"OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads)}
    try:
        rec = Recommender.from_pretrained(cfg.bundle, device=cfg.device, mode=cfg.mode, num_beams=cfg.num_beams,
                                          catalog=cfg.catalog)
    except (BundleNotFoundError, InputNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    args = ["--bundle", cfg.bundle, "--device", cfg.device, "--mode", cfg.mode, "--num_beams", str(cfg.num_beams),
            "--max_batch_size", str(cfg.max_batch_size), "--max_wait_ms", str(cfg.max_wait_ms)]
    proc, url = spawn_server(args + (["--catalog", cfg.catalog] if cfg.catalog else []), env=env)
    try:
        one_by_one(rec, queries[:cfg.warmup], cfg.k)
        asyncio.run(_send_all(url, queries[:cfg.warmup], cfg.k, 1))
        base_rounds, served_rounds = [], {c: [] for c in cfg.concurrency}
        for _ in range(cfg.repeats):
            base_rounds.append(one_by_one(rec, queries, cfg.k))
            for c in cfg.concurrency:
                served_rounds[c].append(asyncio.run(_send_all(url, queries, cfg.k, c)))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    base = summarize("in-process, one by one", 1, base_rounds, None)
    arms = [base] + [summarize("music3m-serve", c, served_rounds[c], base["requests_per_s"])
                     for c in cfg.concurrency]
    rows = [[a["arm"], a["concurrency"], a["requests_per_round"], f"{a['requests_per_s']:.2f}", f"{a['p50_ms']:.0f}",
             f"{a['p95_ms']:.0f}", f"{a['generate_calls_per_round']:g}", f"{a['vs_baseline']:.2f}"] for a in arms]
    print(f"bundle {cfg.bundle}, {cfg.device}, {cfg.num_beams} beams, k={cfg.k}, mode {cfg.mode}, torch threads "
          f"{cfg.threads or 'default'}; server knobs max_batch_size={cfg.max_batch_size}, "
          f"max_wait_ms={cfg.max_wait_ms:g}; {cfg.repeats} alternating rounds")
    print(markdown_table(["arm", "concurrency", "requests", "req/s (median)", "p50 ms", "p95 ms",
                          "generate calls", "req/s vs baseline"], rows))
    report = {"config": asdict(cfg), "arms": arms}
    if cfg.out:
        write_json(cfg.out, report)
    return report


if __name__ == "__main__":
    main()
