"""A fault-injecting OpenAI-compatible chat endpoint on 127.0.0.1 for the LLM client tests (not a test module).

Each request's item is its last user message. The fault an item gets is read from a `fault=NAME[xN]` marker in
that message (first N requests of the item fail that way, then it answers well), or chosen by `fault_of(text)`
when given. Good answers are deterministic in (user message, seed): a {"query": ...} object when the request's
JSON schema asks for "query", else nine 0..10 scores. Faults:
  timeout   answer after `slow_s` seconds (past the client timeout)     500 / 503   server error
  429       rate limited, with Retry-After: 1                           drop        close the connection unanswered
  garbage   a 200 whose body is not JSON                                400, 404    a client error (never retried)
  trickle   a good answer sent one byte per `trickle_s` seconds         408         request timeout (retried)
  prose     content is prose, not JSON       wrongkeys / range     content with wrong keys / out-of-range numbers
Any other 3-digit NAME is answered with that HTTP status. `prose`, `wrongkeys`, `range`, `trickle` and the 4xx
without xN are permanent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common.registry import MODALITY_NAMES

_MARK = re.compile(r"fault=([a-z]+?|\d+?)(?:x(\d+))?\b")


def _digest(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def good_content(request: dict) -> str:
    """A valid answer for the request's dataset, deterministic in (last user message, seed)."""
    text, seed = request["messages"][-1]["content"], request.get("seed")
    schema = (request.get("response_format") or {}).get("schema") or {}
    if "query" in schema.get("properties", {}) or "query" in request["messages"][0]["content"]:
        return json.dumps({"query": f"play request {_digest(text, seed) % 100000}"})
    return json.dumps({m: (_digest(text, seed, m) % 11) for m in MODALITY_NAMES})


class FaultServer:
    """`with FaultServer() as fs:` -> fs.base_url; fs.requests counts requests per item (user message)."""

    def __init__(self, slow_s: float = 2.0, delay_s: float = 0.0, fault_of=None, trickle_s: float = 0.02):
        self.slow_s, self.delay_s, self.fault_of, self.trickle_s = slow_s, delay_s, fault_of, trickle_s
        self.requests: Counter = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def fault(self, text: str, n: int) -> str | None:
        """The fault of the n-th (0-based) request of an item, or None for a good answer."""
        mark = _MARK.search(text)
        name, times = (mark.group(1), mark.group(2)) if mark else (self.fault_of(text) if self.fault_of else None, None)
        if name is None or name == "ok":
            return None
        return name if times is None or n < int(times) else None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _trickle(self, body: bytes) -> None:
                """Headers at once, then the body one byte at a time: every read is quick, the whole is slow."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.flush()
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle_s)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up
                    pass

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fault", "object": "model"}]}).encode())

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = request["messages"][-1]["content"]
                with server.lock:
                    n = server.requests[text]
                    server.requests[text] += 1
                fault = server.fault(text, n)
                time.sleep(server.delay_s)
                if fault == "timeout":
                    time.sleep(server.slow_s)
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                elif fault == "429":
                    return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
                elif fault is not None and fault.isdigit():
                    return self._send(int(fault), json.dumps({"error": {"message": f"injected {fault}"}}).encode())
                elif fault == "garbage":
                    return self._send(200, b"<html>not json")
                content = {"prose": "Sure! Here are the scores you asked for: all of them are high.",
                           "wrongkeys": json.dumps({"foo": 1, "bar": 2}),
                           "range": json.dumps({m: 42 for m in MODALITY_NAMES})}.get(fault) or good_content(request)
                body = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": request["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split()),
                                  "total_tokens": len(text.split()) + len(content.split())}}
                if fault == "trickle":
                    return self._trickle(json.dumps(body).encode())
                self._send(200, json.dumps(body).encode())

        return Handler

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
