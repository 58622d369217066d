"""Crash tests: start a real command and SIGKILL it as soon as some of its work is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout_s: float, interval_s: float = 0.01,
              **popen_kwargs) -> int:
    """Run `cmd`, poll `ready()` every `interval_s` (at most `timeout_s`), then SIGKILL the command (its whole
    process group when started with start_new_session=True) -> its return code (-SIGKILL when it was killed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen_kwargs)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(interval_s)
        if popen_kwargs.get("start_new_session"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own in the meantime
        pass
    finally:
        proc.wait(timeout=60)
    return proc.returncode
