"""music3m-serve for real: `python -m inference.serve` in a subprocess on a free port (inference.serve.spawn_server)
over the tiny bundle of tests/eval/test_t2mr.py, called with an HTTP client. Concurrent requests get the same answers
as `Recommender.recommend` for each query alone, in fewer generate calls than requests; bad requests get a 400."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from inference.bundle import load_bundle
from inference.recommend import Recommender
from inference.serve import spawn_server
from tests.eval.test_t2mr import bundle  # noqa: F401 (the tiny bundle fixture)

REPO = Path(__file__).resolve().parents[2]
NUM_BEAMS = 3


@pytest.fixture(scope="module")
def server(bundle):  # noqa: F811
    root, _ = bundle
    # a generous wait window, so that the test's concurrent requests surely meet in a batch on a busy machine
    proc, url = spawn_server(["--bundle", str(root / "model"), "--catalog", str(root / "run" / "catalog.parquet"),
                              "--num_beams", str(NUM_BEAMS), "--max_batch_size", "8", "--max_wait_ms", "300"])
    yield url
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def rec(bundle):  # noqa: F811
    root, _ = bundle
    return Recommender(load_bundle(root / "model"), num_beams=NUM_BEAMS, catalog=root / "run" / "catalog.parquet")


def test_health(server, bundle):  # noqa: F811
    root, db = bundle
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["bundle"] == str(root / "model") and health["tracks"] == db.num_tracks
    assert {"requests", "generate_calls"} <= set(health)
    assert health["hybrid"] == [] and health["ensemble"] == [] and health["artist_first"] is False


def test_concurrent_requests_are_batched_and_answered_as_alone(server, rec):
    requests = [("play some rock", 5), ("90s rock", 3), ("rock", 10), ("play some 90s rock", 1),
                ("jazz for a rainy day", 7), ("some", 4)]
    before = httpx.get(f"{server}/health").json()
    with httpx.Client(base_url=server, timeout=120.0) as client, ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda qk: client.post("/recommend", json={"query": qk[0], "k": qk[1]}), requests))
    after = httpx.get(f"{server}/health").json()
    for (query, k), answer in zip(requests, answers):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["query"] == query and len(body["tracks"]) == k
        assert body["tracks"] == rec.recommend([query], k=k)[0]
        assert all(t["title"].startswith("song ") for t in body["tracks"])
    assert after["requests"] - before["requests"] == len(requests)
    assert 1 <= after["generate_calls"] - before["generate_calls"] < len(requests)
    assert after["largest_batch"] > 1


def test_bad_requests_get_400_with_a_message(server):
    cases = [({"query": "", "k": 5}, "empty query"), ({"query": "   "}, "empty query"), ({"k": 3}, "empty query"),
             ({"query": "rock", "k": 0}, "k must be a positive integer"),
             ({"query": "rock", "k": -2}, "k must be a positive integer"), ({"query": "rock", "k": "many"}, "k")]
    for body, message in cases:
        answer = httpx.post(f"{server}/recommend", json=body, timeout=60.0)
        assert answer.status_code == 400, (body, answer.text)
        assert message in answer.json()["detail"], answer.json()
    assert httpx.post(f"{server}/recommend", json={"query": "rock", "k": 2}, timeout=60.0).status_code == 200


def test_missing_bundle_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "inference.serve", "--bundle", "runs/no_such_run/model"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: bundle runs/no_such_run/model: no such directory (a bundle is the "
                                   "output_dir of recipes/sft_3mtoken.py; Hub ids have the form owner/name)")


def test_artist_first_is_served_and_reported(bundle):  # noqa: F811
    root, _ = bundle
    catalog = str(root / "run" / "catalog.parquet")
    proc, url = spawn_server(["--bundle", str(root / "model"), "--catalog", catalog, "--num_beams", str(NUM_BEAMS),
                              "--artist_first", "true"])
    try:
        assert httpx.get(f"{url}/health").json()["artist_first"] is True
        body = httpx.post(f"{url}/recommend", json={"query": "rock", "k": 5}, timeout=60.0).json()
        led = Recommender(load_bundle(root / "model"), num_beams=NUM_BEAMS, catalog=catalog, artist_first=True)
        assert body["tracks"] == led.recommend(["rock"], k=5)[0]
        assert len({t["artist"] for t in body["tracks"]}) == 1  # the top track's artist has more than five tracks
    finally:
        proc.terminate()
        proc.wait(timeout=60)
