"""End to end through the real commands, as `make demo` runs them (on a smaller demo catalog)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from common.registry import MODALITY_NAMES
from data_gen.vectorize.embeddings import EmbeddingStore

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
BENCH_SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_has_help_and_config(name):
    module, _, func = SCRIPTS[name].partition(":")
    code = f"import sys; from {module} import {func}; sys.argv = [{name!r}, '--help']; {func}()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--config" in out.stdout and "usage:" in out.stdout


@pytest.mark.parametrize("name", BENCH_SCRIPTS)
def test_every_bench_script_has_help(name):
    out = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--config" in out.stdout


def test_sft_recipe_has_help():
    out = subprocess.run([sys.executable, str(REPO / "recipes" / "sft_3mtoken.py"), "--help"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--token_db_dir" in out.stdout and "--config" in out.stdout


def test_demo_pipeline_writes_nine_modalities(tmp_path):
    run_dir = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "data_gen.catalog.ingest", "--source", "demo", "--num_tracks", "300",
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
    proc = subprocess.run([sys.executable, "-m", "data_gen.catalog.ingest", "--input", str(cat), "--run_dir",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{cat}: row 2: field 'release_date': unparseable date" in proc.stderr
