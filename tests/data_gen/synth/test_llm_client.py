"""The generation engine against a fault-injecting endpoint: retries with backoff, failures, cache, kill + resume."""

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.registry import MODALITY_NAMES
from data_gen.catalog.reader import catalog_track_ids
from data_gen.synth.dqt import DqtConfig, plan
from data_gen.synth.dqt import run as dqt_run
from data_gen.synth.dr import DrConfig, validate_scores
from data_gen.synth.dr import run as dr_run
from data_gen.synth.llm_client import ClientConfig, EndpointDown, Engine, Job, OutputsInvalid
from data_gen.synth.llm_store import read_jsonl
from tests.data_gen.synth.llm_fault_server import FaultServer, _digest
from tests.data_gen.synth.llm_helpers import FAST, demo_run_dir
from tests.process import kill_when

REPO = Path(__file__).resolve().parents[3]


def _engine(base_url, out_dir, **overrides):
    settings = {"concurrency": 4, "max_retries": 3, "max_attempts": 3, **FAST, **overrides}
    cfg = ClientConfig(base_url=base_url, model="fault", **settings)
    engine = Engine(cfg, out_dir, validate_scores)
    delays = []

    async def record(delay):  # keep the schedule, skip the wait
        delays.append(delay)

    engine.sleep = record
    return engine, delays


def _run(engine, texts):
    jobs = [Job(f"k{i}", i, [{"role": "user", "content": t}], {"text": t}) for i, t in enumerate(texts)]
    return asyncio.run(engine.run(jobs, total=len(jobs)))


def _outcome(out_dir):
    items = {r["key"]: r for r in read_jsonl(Path(out_dir) / "items.jsonl")}
    failures = {r["key"]: r for r in read_jsonl(Path(out_dir) / "failures.jsonl")}
    return items, failures


TRANSIENT = ["fault=500x2", "fault=503x1", "fault=429x1", "fault=timeoutx1", "fault=dropx2", "fault=garbagex1",
             "fault=prosex1", "fault=rangex2", "fault=ok"]
PERMANENT = {"fault=prose": "invalid_prose", "fault=wrongkeys": "invalid_wrong_keys",
             "fault=range": "invalid_out_of_range", "fault=400": "http_400", "fault=500": "http_500"}


def test_transient_faults_end_in_dataset_permanent_in_failures(tmp_path):
    texts = [f"item {i} {t}" for i, t in enumerate(TRANSIENT + list(PERMANENT))]
    with FaultServer(slow_s=1.5) as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "out", timeout=0.5)
        report = _run(engine, texts)
        items, failures = _outcome(tmp_path / "out")
        assert set(items) | set(failures) == {f"k{i}" for i in range(len(texts))}
        assert not set(items) & set(failures)  # never both, never neither
        for i, text in enumerate(texts):
            key = f"k{i}"
            if text.split()[-1] in TRANSIENT:
                assert all(0 <= items[key][m] <= 10 for m in MODALITY_NAMES)
            else:
                assert failures[key]["reason"] == PERMANENT[text.split()[-1]], failures[key]
        per_item = {text.split()[-1]: fs.requests[text] for text in texts}
    # transport faults: one request per fault plus the good one; invalid output: one request per attempt
    assert per_item["fault=500x2"] == 3 and per_item["fault=503x1"] == 2 and per_item["fault=429x1"] == 2
    assert per_item["fault=timeoutx1"] == 2 and per_item["fault=dropx2"] == 3 and per_item["fault=garbagex1"] == 2
    assert per_item["fault=prosex1"] == 2 and per_item["fault=rangex2"] == 3 and per_item["fault=ok"] == 1
    assert per_item["fault=400"] == 1  # a client error is never retried
    assert per_item["fault=500"] == 4  # max_retries=3 -> 4 requests, then a failure
    prose_key = f"k{len(TRANSIENT)}"
    assert per_item["fault=prose"] == 3 and failures[prose_key]["raw"].startswith("Sure!")
    assert report["retries"] == {"http_500": 2 + 3, "http_503": 1, "http_429": 1, "timeout": 1, "connection": 2,
                                 "bad_response": 1}
    assert report["items_ok"] == len(TRANSIENT) and report["items_failed"] == len(PERMANENT)
    assert report["failures"] == {r: 1 for r in PERMANENT.values()}
    assert report["invalid"] == {"prose": 1 + 3, "out_of_range": 2 + 3, "wrong_keys": 3}
    assert report["completion_tokens"] > 0 and report["prompt_tokens"] > 0


def test_backoff_doubles_with_jitter_and_honours_retry_after(tmp_path):
    with FaultServer() as fs:
        engine, delays = _engine(fs.base_url, tmp_path / "a", backoff_base=0.01, backoff_max=10.0, backoff_jitter=0.5)
        _run(engine, ["fault=503x3"])
        assert len(delays) == 3
        for n, d in enumerate(delays):
            assert 0.01 * 2**n <= d <= 0.01 * 2**n * 1.5
        engine, delays = _engine(fs.base_url, tmp_path / "b", backoff_base=0.01)
        _run(engine, ["fault=429x1"])
        assert delays == [pytest.approx(1.0)]  # Retry-After: 1 wins over the 0.01 s backoff


def test_rerun_hits_cache_and_sends_nothing(tmp_path):
    texts = [f"item {i} fault=prosex1" for i in range(5)] + ["fault=prose"]
    with FaultServer() as fs:
        first, _ = _engine(fs.base_url, tmp_path / "one", cache_dir=str(tmp_path / "cache"))
        r1 = _run(first, texts)
        second, _ = _engine(fs.base_url, tmp_path / "two", cache_dir=str(tmp_path / "cache"))
        r2 = _run(second, texts)
    with FaultServer() as fs:  # a fresh server: its per-item fault counters start again
        nocache, _ = _engine(fs.base_url, tmp_path / "three", cache=False)
        r3 = _run(nocache, texts)
    assert r1["requests_sent"] == 5 * 2 + 3 and r2["requests_sent"] == 0 and r2["cache_hits"] == r1["requests_sent"]
    assert r3["requests_sent"] == r1["requests_sent"]
    lines = [sorted((tmp_path / d / "items.jsonl").read_text().splitlines()) for d in ("one", "two")]
    assert lines[0] == lines[1] and len(lines[0]) == 5


def test_dqt_mix_and_dr_commands_against_the_fault_server(tmp_path):
    run_dir = demo_run_dir(tmp_path, num_tracks=10)
    fault_of = lambda text: "prose" if _digest(text) % 7 == 0 else ("500x1" if _digest(text) % 3 == 0 else None)
    with FaultServer(fault_of=fault_of) as fs:
        dqt = dqt_run(DqtConfig(run_dir=str(run_dir), base_url=fs.base_url, mode="mix", template_share=0.5,
                                num_queries=3, **FAST))
        dr = dr_run(DrConfig(run_dir=str(run_dir), base_url=fs.base_url, **FAST))
    rows = read_jsonl(run_dir / "dqt" / "dqt.jsonl")
    failed = {f["key"] for f in read_jsonl(run_dir / "dqt" / "failures.jsonl")}
    slots = list(plan(DqtConfig(run_dir=str(run_dir), mode="mix", template_share=0.5, num_queries=3)))
    assert len(slots) == 30 and {s.source for s in slots} == {"llm", "template"}
    assert len(rows) + len(failed) == 30
    assert {r["source"] for r in rows} == {"llm", "template"} and dqt["counts"]["llm_failures"] == len(failed)
    dr_rows = read_jsonl(run_dir / "dr" / "dr.jsonl")
    dr_failed = read_jsonl(run_dir / "dr" / "failures.jsonl")
    assert len(dr_rows) + len(dr_failed) == len(rows) and dr["counts"]["queries"] == len(rows)
    assert all(0 <= r[m] <= 10 for r in dr_rows for m in ("AC", "TC")) and all(f["raw"] for f in dr_failed)


def test_kill_and_resume_gives_the_uninterrupted_dataset(tmp_path):
    run_a = demo_run_dir(tmp_path, num_tracks=40, name="killed")
    run_b = tmp_path / "straight"
    run_b.mkdir()
    shutil.copy(run_a / "catalog.parquet", run_b / "catalog.parquet")
    fault_of = lambda text: "prose" if _digest(text) % 9 == 0 else ("503x1" if _digest(text) % 4 == 0 else None)
    args = ["--num_queries", "1", "--concurrency", "2", "--progress", "false", "--backoff_base", "0.01",
            "--backoff_max", "0.05"]
    with FaultServer(delay_s=0.05, fault_of=fault_of) as fs:
        cmd = [sys.executable, "-m", "data_gen.synth.dqt", "--run_dir", str(run_a), "--base_url", fs.base_url, *args]
        items = run_a / "dqt" / "items.jsonl"
        returncode = kill_when(cmd, lambda: items.exists() and items.read_text().count("\n") >= 8, 60, 0.02,
                               cwd=REPO)  # kill once some items are done
        assert returncode == -signal.SIGKILL, "the run finished before it could be killed"
        done_before = items.read_text().count("\n")
        assert 0 < done_before < 40 and not (run_a / "dqt" / "dqt.jsonl").exists()
        with open(items, "a") as fh:
            fh.write('{"key": "torn')  # as if killed in the middle of a line
        base = {"base_url": fs.base_url, "num_queries": 1, "concurrency": 2, **FAST}
        resumed = dqt_run(DqtConfig(run_dir=str(run_a), **base))
        dqt_run(DqtConfig(run_dir=str(run_b), **base))
    assert resumed["report"]["items_already_done"] >= done_before
    for name in ("dqt.jsonl", "failures.jsonl"):
        a, b = (run_a / "dqt" / name), (run_b / "dqt" / name)
        if name == "dqt.jsonl":
            assert a.read_bytes() == b.read_bytes()
        else:
            key = lambda f: sorted((r["key"], r["reason"], r["raw"]) for r in read_jsonl(f))
            assert key(a) == key(b) and key(a)  # some items fail permanently, the same ones in both runs
    keys = [r["key"] for r in read_jsonl(run_a / "dqt" / "items.jsonl")]
    failed = [r["key"] for r in read_jsonl(run_a / "dqt" / "failures.jsonl")]
    assert len(keys) == len(set(keys)) and not set(keys) & set(failed)
    assert sorted(keys + failed) == sorted(f"{t}#0" for t in catalog_track_ids(run_a / "catalog.parquet"))


def test_endpoint_down_stops_the_run_and_retry_failed_resumes(tmp_path):
    texts = [f"item {i}" for i in range(12)]
    with FaultServer(fault_of=lambda text: "500") as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "out", concurrency=1, max_retries=1, abort_after=3)
        with pytest.raises(EndpointDown):
            _run(engine, texts)
    items, failures = _outcome(tmp_path / "out")
    assert not items and len(failures) == 3 and {f["reason"] for f in failures.values()} == {"http_500"}
    with FaultServer() as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "out")
        assert _run(engine, texts)["items_ok"] == 9  # a plain re-run skips the recorded failures
        engine, _ = _engine(fs.base_url, tmp_path / "out", retry_failed=True)
        assert _run(engine, texts)["items_ok"] == 3
    items, failures = _outcome(tmp_path / "out")
    assert len(items) == 12 and not failures


def test_timeout_is_a_deadline_for_the_whole_request(tmp_path):
    """A server that sends its answer one byte at a time never trips a read timeout; the request's deadline does."""
    texts = ["a fault=tricklex1", "b fault=trickle"]
    with FaultServer(trickle_s=0.02) as fs:  # a ~350-byte answer: ~7 s if the client waited for all of it
        engine, _ = _engine(fs.base_url, tmp_path / "out", timeout=0.5, max_retries=1, concurrency=2)
        start = time.perf_counter()
        report = _run(engine, texts)
        wall = time.perf_counter() - start
        per_item = {text: fs.requests[text] for text in texts}
    items, failures = _outcome(tmp_path / "out")
    assert per_item == {"a fault=tricklex1": 2, "b fault=trickle": 2}  # cut at the deadline, retried
    assert set(items) == {"k0"} and failures["k1"]["reason"] == "timeout"
    assert "no answer within 0.5s" in failures["k1"]["detail"]
    assert report["retries"] == {"timeout": 2}
    assert wall < 4.0, wall  # two deadlines of 0.5 s per item, run side by side


def test_client_errors_are_reported_as_such_and_only_408_and_429_retried(tmp_path):
    texts = ["a fault=408x2", "b fault=429x1", "c fault=400", "d fault=404", "e fault=ok"]
    with FaultServer() as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "out", concurrency=1)
        report = _run(engine, texts)
        per_item = {text: fs.requests[text] for text in texts}
    assert list(per_item.values()) == [3, 2, 1, 1, 1]  # 408 and 429 retried, 400 and 404 sent once
    items, failures = _outcome(tmp_path / "out")
    assert set(items) == {"k0", "k1", "k4"}
    assert (failures["k2"]["reason"], failures["k2"]["detail"]) == ("http_400", "HTTP 400: injected 400")
    assert (failures["k3"]["reason"], failures["k3"]["detail"]) == ("http_404", "HTTP 404: injected 404")
    assert report["retries"] == {"http_408": 2, "http_429": 1}

    # every request rejected: the breaker names the status and the server's message, not an outage
    with FaultServer(fault_of=lambda text: "400") as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "all400", concurrency=1, abort_after=3)
        with pytest.raises(EndpointDown) as err:
            _run(engine, [f"item {i}" for i in range(10)])
        assert sum(fs.requests.values()) == 3
    message = str(err.value)
    assert "rejected" in message and "HTTP 400: injected 400" in message and "--model" in message
    assert "up?" not in message


def test_outputs_that_never_validate_stop_the_run(tmp_path):
    texts = [f"item {i} fault=prose" for i in range(10)]
    with FaultServer() as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "out", concurrency=1, max_attempts=3, abort_after_invalid=7)
        with pytest.raises(OutputsInvalid, match=r"7 outputs in a row failed validation \({'prose': 7}\)"):
            _run(engine, texts)
        assert sum(fs.requests.values()) == 7  # not 3 per item for the whole dataset
    items, failures = _outcome(tmp_path / "out")
    assert not items and sorted(failures) == ["k0", "k1"]  # the item that tripped the breaker is not recorded

    # a valid output ends the streak: two invalid outputs per item never reach a limit of 3
    with FaultServer() as fs:
        engine, _ = _engine(fs.base_url, tmp_path / "mixed", concurrency=1, abort_after_invalid=3)
        report = _run(engine, [f"item {i} fault=prosex2" for i in range(5)])
    assert report["items_ok"] == 5 and report["invalid"] == {"prose": 10}


@pytest.mark.parametrize("fault,expected", [("400", "HTTP 400: injected 400"), ("prose", "failed validation")])
def test_dqt_command_stops_with_a_clear_error(tmp_path, fault, expected):
    run_dir = demo_run_dir(tmp_path, num_tracks=8)
    with FaultServer(fault_of=lambda text: fault) as fs:
        proc = subprocess.run([sys.executable, "-m", "data_gen.synth.dqt", "--run_dir", str(run_dir), "--base_url",
                               fs.base_url, "--num_queries", "1", "--concurrency", "1", "--progress", "false",
                               "--abort_after", "3", "--abort_after_invalid", "4"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and "up?" not in proc.stderr and "Traceback" not in proc.stderr
