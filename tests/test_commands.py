"""End to end through the real commands, as `make demo` runs them (on a smaller demo catalog)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from data_gen.embeddings import EmbeddingStore
from data_gen.registry import MODALITY_NAMES

COMMANDS = ["data_gen.ingest", "data_gen.vectorize", "data_gen.split", "data_gen.dqt", "data_gen.dr"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_stage_has_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
    assert "--run_dir" in out.stdout and "--config" in out.stdout


def test_demo_pipeline_writes_nine_modalities(tmp_path):
    run_dir = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "data_gen.ingest", "--source", "demo", "--num_tracks", "300",
                    "--run_dir", str(run_dir)], check=True, capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-m", "data_gen.vectorize", "--run_dir", str(run_dir)], check=True,
                         capture_output=True, text=True)
    assert "| TC | done | 128 |" in out.stdout
    store = EmbeddingStore(run_dir)
    assert store.modalities() == MODALITY_NAMES
    presence = store.presence()
    assert presence.shape == (300, 9)
    shares = presence.mean(0)
    assert (shares > 0.5).all() and (shares < 1.0).any()  # every modality mostly there, some tracks missing some
    for m in MODALITY_NAMES:
        matrix = store.load(m)
        assert matrix.shape[0] == 300 and np.isfinite(matrix).all()
    ingest = json.loads((run_dir / "ingest_manifest.json").read_text())
    assert ingest["counts"]["kept"] == 300 and ingest["counts"]["rejected"] == 0
    # a second run is a no-op: every modality is up to date
    again = subprocess.run([sys.executable, "-m", "data_gen.vectorize", "--run_dir", str(run_dir)], check=True,
                           capture_output=True, text=True)
    assert again.stderr.count("up to date") == 9


def test_bad_input_exits_with_a_named_error(tmp_path):
    cat = tmp_path / "bad.csv"
    cat.write_text("track_id,release_date\nt1,2001\nt2,not-a-date\n")
    proc = subprocess.run([sys.executable, "-m", "data_gen.ingest", "--input", str(cat), "--run_dir",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{cat}: row 2: field 'release_date': unparseable date" in proc.stderr
