"""Stage manifests: config, input and output checksums, counts in/out and library versions -> `<stage>_manifest.json`.

Every stage writes one so that a run directory says what produced it, can be audited, and can be resumed or
skipped when its inputs and config have not changed (`config_hash`). `verify_outputs` lets a later stage refuse a
directory whose files are not the ones its manifest describes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping
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


class ManifestMismatch(Exception):
    """A run directory whose files are not the ones its manifest describes (e.g. a failed or mixed re-run)."""


def write_manifest(path: str | Path, stage: str, config: Any, inputs: dict[str, str | Path],
                   counts: dict, extra: dict | None = None, outputs: Mapping[str, str | Path] | None = None) -> dict:
    """Write a manifest JSON (atomically) and return it. `outputs` are files that sit beside the manifest: each is
    recorded by file name and sha256, for `verify_outputs`."""
    manifest = {
        "stage": stage,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config_dict(config),
        "inputs": {name: {"path": str(p), "sha256": file_sha256(p)} for name, p in inputs.items() if p},
        **({"outputs": {name: {"file": Path(p).name, "sha256": file_sha256(p)} for name, p in outputs.items()}}
           if outputs is not None else {}),
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


def verify_outputs(manifest_path: str | Path, files: Mapping[str, str], known_sha256: Mapping[str, str] | None = None
                   ) -> bool:
    """Check the files {output name: file name beside the manifest} against the manifest's recorded outputs.

    Raises ManifestMismatch (one line) when a recorded file is missing or has another checksum, or when a file
    exists that the manifest records no output for. Returns False, checking nothing, for a manifest written before
    outputs were recorded. `known_sha256` {output name: sha256} saves hashing a file twice."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    recorded, again = manifest.get("outputs"), f"re-run the {manifest.get('stage', 'producing')} stage"
    if not isinstance(recorded, dict) or not all(isinstance(v, dict) for v in recorded.values()):
        return False
    where = manifest_path.parent
    for name, file in files.items():
        rec, path = recorded.get(name), where / file
        if rec is None:
            if path.exists():
                raise ManifestMismatch(f"{path}: not written by the run that {manifest_path} describes (it records "
                                       f"no {name}); {again}")
            continue
        if not path.exists():
            raise ManifestMismatch(f"{path}: missing, but {manifest_path} records it; {again}")
        sha = (known_sha256 or {}).get(name) or file_sha256(path)
        if sha != rec.get("sha256"):
            raise ManifestMismatch(f"{path}: does not match {manifest_path} (sha256 {sha[:12]}..., recorded "
                                   f"{str(rec.get('sha256'))[:12]}...): the directory mixes outputs of different "
                                   f"runs; {again}")
    return True
