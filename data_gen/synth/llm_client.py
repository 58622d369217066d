"""Async generation engine for D_qt and D_r: `generate(jobs, validate, cfg, out_dir)` -> items.jsonl / failures.jsonl.

Any OpenAI-compatible endpoint through `openai.AsyncOpenAI`, with bounded concurrency, a deadline per request,
backoff on transient faults (timeouts, connection errors, 408, 429, 5xx; other 4xx are the request's fault and are
not retried), the response cache of llm_store, a new attempt while `validate` raises InvalidOutput (up to
`max_attempts`), two breakers (items failing on transport/HTTP errors, outputs failing validation, each N in a row),
and resume: each finished item goes to exactly one of the two logs, and a restarted run skips it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import openai
from tqdm.auto import tqdm

from data_gen.synth.llm_store import ResponseCache, ResultLog, cache_key, read_jsonl
from data_gen.synth.track_facts import stable_hash


@dataclass(kw_only=True)
class ClientConfig:
    """Settings of the LLM endpoint and of the generation engine (shared by data_gen.synth.dqt and .dr)."""

    base_url: str = field(default="http://127.0.0.1:8765/v1", metadata={
        "help": "OpenAI-compatible endpoint (python -m data_gen.synth.llm_server start serves one on port 8765)"})
    model: str = field(default="smollm2", metadata={"help": "model name sent to the endpoint (part of the cache key)"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "environment variable with the API key ('sk-local' when unset: local servers need none)"})
    concurrency: int = field(default=8, metadata={"help": "requests in flight at most"})
    timeout: float = field(default=120.0, metadata={
        "help": "deadline in seconds for a whole request (connect, wait, read), after which it counts as a timeout "
                "and is retried; a server that sends its answer slowly cannot hold a request longer than this"})
    max_retries: int = field(default=5, metadata={
        "help": "retries of transient faults (timeout, connection, 408, 429, 5xx) per attempt; other 4xx are "
                "never retried"})
    max_attempts: int = field(default=3, metadata={
        "help": "attempts (a new seed each) before invalid output is recorded as a failure"})
    backoff_base: float = field(default=0.5, metadata={"help": "first backoff delay in seconds (doubles per retry)"})
    backoff_max: float = field(default=30.0, metadata={"help": "backoff delay cap in seconds"})
    backoff_jitter: float = field(default=0.5, metadata={"help": "random extra delay, as a fraction of the delay"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    max_tokens: int = field(default=96, metadata={"help": "completion token limit per request"})
    seed: int = field(default=0, metadata={"help": "base seed: attempt seeds derive from it and the item key"})
    json_mode: str = field(default="schema", metadata={
        "help": "constrain output: schema (response_format json_object + JSON schema: llama.cpp compiles it to a "
                "grammar), json_object (any JSON), off", "choices": ["schema", "json_object", "off"]})
    abort_after: int = field(default=20, metadata={
        "help": "stop the run after this many items in a row failed on transport/HTTP errors (endpoint down, or "
                "every request rejected with a 4xx)"})
    abort_after_invalid: int = field(default=50, metadata={
        "help": "stop the run after this many outputs in a row failed validation (prose, wrong keys: the model or "
                "--json_mode does not produce the format); 0: never"})
    retry_failed: bool = field(default=False, metadata={
        "help": "re-attempt items whose recorded failure was a transport/HTTP error (not invalid output)"})
    cache: bool = field(default=True, metadata={"help": "use the response cache (off: every request is sent)"})
    cache_dir: str | None = field(default=None, metadata={"help": "response cache folder (default: the output folder)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass
class Job:
    """One item to generate: a unique key, its position in the dataset, the chat messages, fields to keep."""

    key: str
    order: int
    messages: list[dict]
    meta: dict = field(default_factory=dict)


class InvalidOutput(ValueError):
    """A response that does not satisfy the dataset's schema; `reason` is a short code for reports."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class EndpointDown(RuntimeError):
    """Too many items in a row failed on transport/HTTP errors: the run stops instead of failing every item."""


class OutputsInvalid(RuntimeError):
    """Too many outputs in a row failed validation: the run stops instead of spending max_attempts on every item."""


class RequestFailed(Exception):
    """A request that could not be completed (retries exhausted, or a non-retryable HTTP error)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


def parse_json_object(text: str | None) -> dict:
    """Model text -> dict. Accepts a bare object or one in a ```json fence; prose around it is InvalidOutput."""
    text = (text or "").strip()
    if not text:
        raise InvalidOutput("empty")
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith(("{", "[")):
        raise InvalidOutput("prose", text[:80])
    try:
        obj, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as err:
        raise InvalidOutput("not_json", err.msg) from None
    if text[end:].strip():
        raise InvalidOutput("prose", "text after the JSON object")
    if not isinstance(obj, dict):
        raise InvalidOutput("not_json", "not an object")
    return obj


def response_format(cfg: ClientConfig, schema: dict) -> dict | None:
    """The strongest output constraint the setting asks for (llama.cpp honours `schema` inside json_object)."""
    if cfg.json_mode == "off":
        return None
    if cfg.json_mode == "json_object":
        return {"type": "json_object"}
    return {"type": "json_object", "schema": schema}


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(headers[name]) * scale
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _transient_reason(err: Exception) -> str | None:
    """Reason code of a retryable fault, or None for a fault that retrying cannot fix (a 4xx other than 408/429)."""
    if isinstance(err, (openai.APITimeoutError, TimeoutError)):  # TimeoutError: the request's deadline passed
        return "timeout"
    if isinstance(err, openai.APIConnectionError):
        return "connection"
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        return f"http_{code}" if code in (408, 429) or code >= 500 else None
    if isinstance(err, (openai.APIResponseValidationError, json.JSONDecodeError, IndexError, AttributeError)):
        return "bad_response"
    return None


def _http_error_detail(err: openai.APIStatusError) -> str:
    """The server's own error message of an HTTP error (what a 4xx says is wrong with the request)."""
    body = err.body
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else error
    if not message:
        try:
            message = err.response.text
        except Exception:  # noqa: BLE001 -- a body that cannot be read: the status alone
            message = ""
    return f"HTTP {err.status_code}: {str(message).strip()[:300] or '(no message)'}"


@dataclass
class Stats:
    items_total: int = 0
    items_already_done: int = 0
    items_ok: int = 0
    items_failed: int = 0
    requests_sent: int = 0
    cache_hits: int = 0
    outputs_checked: int = 0
    outputs_valid: int = 0
    first_attempt_valid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)

    def report(self, wall_s: float) -> dict:
        def rate(num: float, den: float, digits: int = 4) -> float | None:
            return round(num / den, digits) if den else None

        out = asdict(self)
        out.update(retries=dict(self.retries), invalid=dict(self.invalid), failures=dict(self.failures),
                   wall_s=round(wall_s, 3),
                   valid_output_rate=rate(self.outputs_valid, self.outputs_checked),
                   first_attempt_valid_rate=rate(self.first_attempt_valid, self.items_ok + self.items_failed),
                   requests_per_s=rate(self.requests_sent, wall_s, 3),
                   completion_tokens_per_s=rate(self.completion_tokens, wall_s, 2),
                   prompt_tokens_per_s=rate(self.prompt_tokens, wall_s, 2))
        return out


class Engine:
    """Runs jobs against one endpoint with retries, cache and validation; see the module docstring."""

    def __init__(self, cfg: ClientConfig, out_dir: str | Path, validate: Callable[[str], dict],
                 response_format: dict | None = None):
        self.cfg, self.out_dir, self.validate = cfg, Path(out_dir), validate
        self.response_format = response_format
        self.stats = Stats()
        self.failed_in_a_row = 0  # items that ended on RequestFailed since the last response
        self.last_failure: RequestFailed | None = None
        self.invalid_in_a_row: list[InvalidOutput] = []  # outputs that failed validation since the last valid one
        self.last_invalid_raw = ""
        self.sleep = asyncio.sleep  # tests swap in a recorder to check the backoff schedule
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.out_dir
        self.cache = ResponseCache(cache_dir / "responses.sqlite") if cfg.cache else None

    def params(self, seed: int) -> dict:
        params = {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p, "max_tokens": self.cfg.max_tokens,
                  "seed": seed}
        if self.response_format is not None:
            params["response_format"] = self.response_format
        return params

    def backoff(self, retry: int, err: Exception) -> float:
        delay = min(self.cfg.backoff_max, self.cfg.backoff_base * 2**retry)
        delay *= 1.0 + self.cfg.backoff_jitter * random.random()
        return max(delay, _retry_after(err) or 0.0)

    async def complete(self, client: openai.AsyncOpenAI, messages: list[dict], seed: int) -> str:
        """One attempt: the cached text, or a request with transient faults retried; raises RequestFailed."""
        params = self.params(seed)
        key = cache_key(self.cfg.model, messages, params)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return hit["content"]
        for retry in range(self.cfg.max_retries + 1):
            self.stats.requests_sent += 1
            try:
                # the client's timeout bounds each read; this bounds the request, however slowly bytes arrive
                async with asyncio.timeout(self.cfg.timeout):
                    resp = await client.chat.completions.create(model=self.cfg.model, messages=messages, **params)
                content = resp.choices[0].message.content or ""
            except Exception as err:  # noqa: BLE001 -- classified right below
                reason = _transient_reason(err)
                if reason is None:
                    if isinstance(err, openai.APIStatusError):
                        raise RequestFailed(f"http_{err.status_code}", _http_error_detail(err)) from err
                    raise RequestFailed(type(err).__name__, str(err)[:300]) from err
                if retry == self.cfg.max_retries:
                    what = _http_error_detail(err) if isinstance(err, openai.APIStatusError) else \
                        str(err)[:200] or f"no answer within {self.cfg.timeout:g}s"
                    raise RequestFailed(reason, f"still failing after {retry} retries: {what}") from err
                self.stats.retries[reason] += 1
                await self.sleep(self.backoff(retry, err))
                continue
            if resp.usage is not None:
                self.stats.prompt_tokens += resp.usage.prompt_tokens or 0
                self.stats.completion_tokens += resp.usage.completion_tokens or 0
            if self.cache is not None:
                usage = resp.usage.model_dump() if resp.usage is not None else None
                self.cache.put(key, {"content": content, "usage": usage, "model": resp.model})
            return content
        raise AssertionError("unreachable")

    async def run_job(self, client: openai.AsyncOpenAI, job: Job, log: ResultLog) -> None:
        """Attempts until valid -> one line in items.jsonl, or one line in failures.jsonl."""
        raw, reason, detail = "", "", ""
        for attempt in range(self.cfg.max_attempts):
            # derived, not random: a rerun sends the same seeds, so its requests hit the response cache
            seed = stable_hash("attempt", self.cfg.seed, job.key, attempt) % 2**31
            try:
                raw = await self.complete(client, job.messages, seed)
            except RequestFailed as err:
                reason, detail = err.reason, err.detail
                self.failed_in_a_row += 1
                self.last_failure = err
                break
            self.failed_in_a_row = 0
            self.stats.outputs_checked += 1
            try:
                parsed = self.validate(raw)
            except InvalidOutput as err:
                self.stats.invalid[err.reason] += 1
                reason, detail = f"invalid_{err.reason}", str(err)
                self.invalid_in_a_row.append(err)
                self.last_invalid_raw = raw
                self.check_invalid_breaker()  # raises before this item is recorded: a re-run attempts it again
                continue
            self.invalid_in_a_row.clear()
            self.stats.outputs_valid += 1
            self.stats.first_attempt_valid += attempt == 0
            log.add_item({"key": job.key, "order": job.order, **job.meta, **parsed, "seed": seed,
                          "attempt": attempt})
            self.stats.items_ok += 1
            return
        self.stats.failures[reason] += 1
        self.stats.items_failed += 1
        log.add_failure({"key": job.key, "order": job.order, **job.meta, "reason": reason, "detail": detail,
                         "raw": raw})

    def check_invalid_breaker(self) -> None:
        limit = self.cfg.abort_after_invalid
        if limit and len(self.invalid_in_a_row) >= limit:
            reasons = dict(Counter(err.reason for err in self.invalid_in_a_row))
            raise OutputsInvalid(
                f"{len(self.invalid_in_a_row)} outputs in a row failed validation ({reasons}); the last one: "
                f"{self.last_invalid_raw[:160]!r}. Model {self.cfg.model!r} at {self.cfg.base_url} does not produce "
                f"the expected JSON: check --model and --json_mode ({self.cfg.json_mode}; 'schema' needs a server "
                "that honours response_format), or raise --abort_after_invalid (0: never stop). Finished items are "
                "saved; after a fix (another --model or --json_mode), re-run with --overwrite")

    def endpoint_down(self) -> EndpointDown:
        """The breaker's error, naming what the endpoint answered: a 4xx is the request's fault, not an outage."""
        failures = dict(self.stats.failures)
        last = self.last_failure
        if last is not None and last.reason.startswith("http_4") and last.reason not in ("http_408", "http_429"):
            return EndpointDown(
                f"{self.failed_in_a_row} items in a row were rejected by {self.cfg.base_url} ({failures}); the last "
                f"answer: {last.detail}. A client error is not retried: check --model ({self.cfg.model!r}), "
                f"--base_url, the API key (${self.cfg.api_key_env}) and the request options (--json_mode, "
                "--max_tokens). Finished items are saved: fix the request and re-run with --retry_failed")
        detail = f"; the last: {last.reason}: {last.detail}" if last is not None else ""
        return EndpointDown(f"{self.failed_in_a_row} items in a row failed ({failures}){detail}; is "
                            f"{self.cfg.base_url} up? Finished items are saved: fix the endpoint and re-run with "
                            "--retry_failed")

    async def run(self, jobs: Iterable[Job], total: int | None = None) -> dict:
        log = ResultLog(self.out_dir, retry_failed=self.cfg.retry_failed)
        api_key = os.environ.get(self.cfg.api_key_env) or "sk-local"
        # max_retries=0: retries are ours (backoff with jitter, counted per reason in the report)
        client = openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=api_key, max_retries=0,
                                    timeout=self.cfg.timeout)
        sem = asyncio.Semaphore(self.cfg.concurrency)
        pending: set[asyncio.Task] = set()
        bar = tqdm(total=total, desc=self.out_dir.name, unit="item", disable=not self.cfg.progress)
        start = time.perf_counter()

        errors: list[BaseException] = []

        def finished(task: asyncio.Task) -> None:
            pending.discard(task)
            sem.release()
            bar.update(1)
            if not task.cancelled() and task.exception() is not None:
                errors.append(task.exception())

        try:
            for job in jobs:
                self.stats.items_total += 1
                if job.key in log.done:
                    self.stats.items_already_done += 1
                    bar.update(1)
                    continue
                await sem.acquire()
                if errors:  # a breaker (OutputsInvalid) or a bug: stop rather than fail every item
                    raise errors[0]
                if self.failed_in_a_row >= self.cfg.abort_after:
                    raise self.endpoint_down()
                task = asyncio.create_task(self.run_job(client, job, log))
                pending.add(task)
                task.add_done_callback(finished)
            if pending:
                await asyncio.gather(*pending)
            if errors:
                raise errors[0]
        finally:
            for task in pending:
                task.cancel()
            bar.close()
            log.close()
            await client.close()
            if self.cache is not None:
                self.cache.close()
        return self.stats.report(time.perf_counter() - start)


def generate(jobs: Iterable[Job], validate: Callable[[str], dict], cfg: ClientConfig, out_dir: str | Path,
             response_format: dict | None = None, total: int | None = None) -> dict:
    """Run all jobs (skipping those already in out_dir's logs) -> this run's report dict.

    Each run's report is appended to out_dir/reports.jsonl, so that a resumed dataset keeps the numbers of the
    runs that made it (read them back with `run_history`).
    """
    engine = Engine(cfg, out_dir, validate, response_format)
    report = asyncio.run(engine.run(jobs, total))
    with open(Path(out_dir) / "reports.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(report, sort_keys=True) + "\n")
    return report


def run_history(out_dir: str | Path) -> list[dict]:
    """The reports of every run into out_dir, oldest first."""
    return read_jsonl(Path(out_dir) / "reports.jsonl")


def format_report(report: dict) -> str:
    """A report dict -> a few printable lines."""
    lines = [f"items: {report['items_total']} ({report['items_already_done']} done before), "
             f"ok {report['items_ok']}, failed {report['items_failed']}",
             f"requests sent: {report['requests_sent']}, cache hits: {report['cache_hits']}, "
             f"valid outputs: {report['outputs_valid']}/{report['outputs_checked']}",
             f"retries: {report['retries'] or 'none'}; invalid outputs: {report['invalid'] or 'none'}; "
             f"failures: {report['failures'] or 'none'}",
             f"tokens: prompt {report['prompt_tokens']}, completion {report['completion_tokens']}; "
             f"wall {report['wall_s']:.1f}s, {report['requests_per_s'] or 0:.2f} req/s, "
             f"{report['completion_tokens_per_s'] or 0:.1f} completion tok/s"]
    return "\n".join(lines)


def run_generation_command(run: Callable[[object], dict], cfg: object) -> dict:
    """The shared `main` body of the D_qt / D_r commands: run, map Ctrl-C and run errors to exit codes, print
    the generation report, and return the run's result."""
    try:
        result = run(cfg)
    except KeyboardInterrupt:
        print("\ninterrupted: finished items are saved; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as err:  # EndpointDown, OutputsInvalid, or an output folder of another run
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.get("report"):  # no report where no LLM was asked (playlists source, derived labels)
        print(format_report(result["report"]))
    return result
