"""Stage manifests: config, input checksums, counts in/out and library versions -> `<stage>_manifest.json`.

Every stage writes one so that a run directory says what produced it, can be audited, and can be resumed or
skipped when its inputs and config have not changed (`config_hash`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

_LIBRARIES = ("numpy", "pyarrow", "torch", "transformers", "sentence-transformers", "gensim", "scikit-learn",
              "datasets", "trl", "accelerate", "deepspeed", "peft", "openai")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def config_dict(config: Any) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def config_hash(config: Any, exclude: tuple[str, ...] = ()) -> str:
    data = {k: v for k, v in config_dict(config).items() if k not in exclude}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_manifest(path: str | Path, stage: str, config: Any, inputs: dict[str, str | Path],
                   counts: dict, extra: dict | None = None) -> dict:
    """Write a manifest JSON (atomically) and return it."""
    manifest = {
        "stage": stage,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config_dict(config),
        "inputs": {name: {"path": str(p), "sha256": file_sha256(p)} for name, p in inputs.items() if p},
        "counts": counts,
        "versions": library_versions(),
        "git_commit": git_commit(),
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    tmp.replace(path)
    return manifest


def read_manifest(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
