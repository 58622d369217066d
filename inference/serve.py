"""An HTTP endpoint over a Recommender (FastAPI + uvicorn): requests that arrive together share one batched generate.

    music3m-serve --bundle runs/demo/sft/SmolLM2-135M-Instruct-3MTokenRec --catalog runs/demo/catalog.parquet
    curl -s localhost:8000/recommend -d '{"query": "upbeat dance pop", "k": 5}' -H 'content-type: application/json'

POST /recommend {"query": "...", "k": 10} -> {"query", "tracks"}, the tracks being the records of
`Recommender.recommend` for that query; a bad request (empty query, k <= 0, wrong types) -> 400 {"detail": message}.
GET /health -> {status, bundle, tracks, hybrid, ensemble, artist_first, requests, generate_calls, largest_batch}. Binds
127.0.0.1:8000 by default. With --hybrid bm25 dense (and --catalog) each answer fuses the generated ranking with text
search over the catalog (inference.recommend: Recommender's hybrid answers); with --ensemble B2 ... the rankings of
more bundles are fused in too.

Batching: requests join one queue on the event loop. The collector waits until --max_batch_size requests are queued
or the oldest has waited --max_wait_ms, then answers up to max_batch_size of them with one `Recommender.recommend`
(one generate) in a worker thread; requests that arrive meanwhile form the next batch.
max_wait_ms is what a lone request pays to let others join; max_batch_size bounds memory and the slowest answer.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from common.config import parse_config
from inference.bundle import BundleNotFoundError
from inference.recommend import InputNotFoundError, Recommender, RecommenderOptions, RequestError, check_request


class RecommendRequest(BaseModel):
    query: str = ""
    k: int = 10


def check_batching(max_batch_size: int, max_wait_ms: float) -> None:
    if max_batch_size < 1 or max_wait_ms < 0:
        raise ValueError(f"max_batch_size must be >= 1 and max_wait_ms >= 0, got {max_batch_size} and {max_wait_ms}")


@dataclass
class _Pending:
    query: str
    k: int
    future: asyncio.Future
    arrived_at: float              # event-loop time


class Batcher:
    """Collects concurrent requests into batched `Recommender.recommend` calls, one generate per batch."""

    def __init__(self, recommender: Recommender, max_batch_size: int = 16, max_wait_ms: float = 5.0):
        check_batching(max_batch_size, max_wait_ms)
        self.recommender = recommender
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.pending: deque[_Pending] = deque()
        self.arrived: asyncio.Event | None = None
        self.requests = 0
        self.generate_calls = 0
        self.largest_batch = 0

    def start(self) -> asyncio.Task:
        """Start the collector on the running event loop (the server's lifespan does it)."""
        self.arrived = asyncio.Event()
        return asyncio.create_task(self._collect())

    async def submit(self, query: str, k: int) -> list[dict]:
        """One request -> its track records, answered within the next batch."""
        check_request(query, k)
        loop = asyncio.get_running_loop()
        pending = _Pending(query, k, loop.create_future(), loop.time())
        self.pending.append(pending)
        self.arrived.set()
        return await pending.future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            deadline = self.pending[0].arrived_at + self.max_wait_s
            while len(self.pending) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = [self.pending.popleft() for _ in range(min(len(self.pending), self.max_batch_size))]
            batch = [p for p in batch if not p.future.done()]  # clients that went away
            if batch:
                await self._answer(batch)

    async def _answer(self, batch: list[_Pending]) -> None:
        self.generate_calls += 1
        self.requests += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = await asyncio.to_thread(self.recommender.recommend, [p.query for p in batch],
                                              [p.k for p in batch], batch_size=len(batch))
        except Exception as err:  # the requests of this batch fail, the server goes on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        for p, tracks in zip(batch, results):
            if not p.future.done():
                p.future.set_result(tracks)


def create_app(recommender: Recommender, bundle_name: str, max_batch_size: int = 16, max_wait_ms: float = 5.0):
    """A FastAPI app answering /recommend through a Batcher over `recommender`, and /health."""
    batcher = Batcher(recommender, max_batch_size, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        task = batcher.start()
        yield
        task.cancel()

    app = FastAPI(title="music3m-serve", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    @app.post("/recommend")
    async def recommend(req: RecommendRequest) -> dict:
        try:
            tracks = await batcher.submit(req.query, req.k)
        except RequestError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        return {"query": req.query, "tracks": tracks}

    @app.get("/health")
    async def health() -> dict:
        search = getattr(recommender, "text_search", None)
        return {"status": "ok", "bundle": bundle_name, "tracks": recommender.db.num_tracks,
                "hybrid": list(search.retrievers) if search is not None else [],
                "ensemble": [str(m.bundle.path) for m in getattr(recommender, "members", [])],
                "artist_first": bool(getattr(recommender, "artist_first", False)),
                "requests": batcher.requests, "generate_calls": batcher.generate_calls,
                "largest_batch": batcher.largest_batch}

    return app


def spawn_server(args: list[str], host: str = "127.0.0.1", timeout_s: float = 300.0, env: dict | None = None):
    """Start `python -m inference.serve ARGS` on a free port as a subprocess (extra environment variables `env`) and
    wait until /health answers -> (process, base URL). For tests and benchmarks; stop it with `process.terminate()`."""
    import os
    import socket
    import subprocess
    import tempfile
    import time

    import httpx2

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "inference.serve", "--log_level", "warning", *args,
                             "--host", host, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"music3m-serve exited with code {proc.returncode}: {log.read()[-2000:]}")
        try:
            if httpx2.get(f"{url}/health", timeout=2.0).status_code == 200:
                return proc, url
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"music3m-serve did not answer {url}/health within {timeout_s:.0f} s")


@dataclass
class ServeConfig(RecommenderOptions):
    """Serve a trained 3MTokenRec bundle over HTTP: POST /recommend, GET /health."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (0.0.0.0: every interface)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    max_batch_size: int = field(default=16, metadata={
        "help": "most requests answered by one generate call (bounds memory and the slowest answer)"})
    max_wait_ms: float = field(default=5.0, metadata={
        "help": "how long the first request of a batch waits for others to join (0: no wait, still batching "
                "whatever queued up during the previous batch)"})
    log_level: Literal["critical", "error", "warning", "info", "debug"] = field(default="info", metadata={
        "help": "uvicorn's log level"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ServeConfig, argv)
    try:
        check_batching(cfg.max_batch_size, cfg.max_wait_ms)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        app = create_app(cfg.load(), cfg.bundle, cfg.max_batch_size, cfg.max_wait_ms)
    except (BundleNotFoundError, InputNotFoundError, RequestError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    import uvicorn

    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


if __name__ == "__main__":
    main()
