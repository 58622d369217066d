"""The tokenizer command killed mid-way (SIGKILL once a modality's checkpoint is on disk) and run again: finished
modalities are reused as they are, the one in training is retrained, and the result equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.process import kill_when
from tests.tokenizer_ext.helpers import demo_run
from tokenizer_ext.token_db import TokenDB

REPO = Path(__file__).resolve().parents[2]
MODALITIES = ("SC", "MC", "RI")
# a small RQ-VAE trained long enough (a second or two per modality) for the kill to land between modalities
ARGS = ["--modalities", ",".join(MODALITIES), "--epochs", "60", "--batch_size", "128", "--hidden_dims", "64", "32",
        "--d_z", "16", "--codebook_sizes", "8", "8", "--kmeans_init_iters", "5", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every run, and quick on a busy machine


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return demo_run(tmp_path_factory.mktemp("tok_resume"), 1000, MODALITIES)


def _command(run_dir: Path, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tokenizer_ext.train", "--run_dir", str(run_dir), "--out_dir", str(out_dir), *ARGS]


def _written(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _record(out_dir: Path, modality: str) -> dict:
    record = json.loads((out_dir / modality / "checkpoint.json").read_text())
    return {k: v for k, v in record.items() if k not in ("seconds", "status")}


def test_killed_run_reuses_finished_modalities_and_matches_an_uninterrupted_run(run_dir, tmp_path):
    straight = tmp_path / "straight"
    proc = subprocess.run(_command(run_dir, straight), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "killed"
    returncode = kill_when(_command(run_dir, out), lambda: any((out / m / "checkpoint.json").exists()
                                                                for m in MODALITIES), 300, env=ENV, cwd=REPO)
    assert returncode == -signal.SIGKILL, "the run finished before it could be killed"
    finished = [m for m in MODALITIES if (out / m / "checkpoint.json").exists()]
    assert finished and len(finished) < len(MODALITIES) and not (out / "token_db.parquet").exists()
    records = {m: _written(out / m / "checkpoint.json") for m in finished}  # written once a modality is trained
    with open(out / "train_log.jsonl", "a") as fh:
        fh.write('{"modality": "R')  # as if killed in the middle of a line

    resumed = subprocess.run(_command(run_dir, out), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    status = {m: "reused" if m in finished else "trained" for m in MODALITIES}
    for m in MODALITIES:
        assert f"| {m} | {status[m]} |" in resumed.stdout, resumed.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m: r["status"] for m, r in manifest["counts"]["modalities"].items()} == status
    assert {m: _written(out / m / "checkpoint.json") for m in finished} == records  # not trained again

    # the same result as the uninterrupted run: every epoch's losses, the checkpoints, the token database
    assert (out / "train_log.jsonl").read_text() == (straight / "train_log.jsonl").read_text()
    for m in MODALITIES:
        assert _record(out, m) == _record(straight, m)
        assert (out / m / "model.pt").read_bytes() == (straight / m / "model.pt").read_bytes(), m
    db, reference = TokenDB.load(out), TokenDB.load(straight)
    assert db.modalities == reference.modalities == MODALITIES
    for m in MODALITIES:
        np.testing.assert_array_equal(db.codes[m], reference.codes[m])
    np.testing.assert_array_equal(db.dedup, reference.dedup)
