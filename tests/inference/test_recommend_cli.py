"""music3m-recommend on the tiny bundle of tests/eval/test_t2mr.py: one-line errors (exit code 2, no traceback) for a
missing bundle, relevance model or catalog, an empty query and k <= 0; JSON lines and the table carry the records of
`Recommender.recommend`; the Python API keeps its shape."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.bundle import BundleNotFoundError, load_bundle, looks_local, resolve_bundle_path
from inference.recommend import TABLE_COLUMNS, Recommender, RequestError, main
from tests.eval.test_t2mr import bundle  # noqa: F401 (the tiny bundle fixture)

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference.recommend", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=300)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def rec(bundle):  # noqa: F811
    root, _ = bundle
    return Recommender(load_bundle(root / "model"), num_beams=2, catalog=root / "run" / "catalog.parquet")


def test_missing_local_bundle_is_one_line_not_a_hub_lookup():
    proc = _cli("--bundle", "runs/no_such_run/sft/model", "--query", "rock")
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "bundle runs/no_such_run/sft/model: no such directory" in line and "HFValidationError" not in line


def test_unreachable_hub_id_has_its_own_one_line_error():
    proc = _cli("--bundle", "nobody-here/no-such-bundle", "--query", "rock", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "nobody-here/no-such-bundle: not a local directory, and the Hub repo could not be fetched" in line


def test_looks_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ["runs/demo", "./model", "/abs/model", "a/b/c", "~/model", "bad name"]:
        assert looks_local(name), name
    for name in ["owner/model", "model-name"]:
        assert not looks_local(name), name
    with pytest.raises(BundleNotFoundError, match="no such directory"):
        resolve_bundle_path("runs/demo")
    (tmp_path / "runs" / "demo").mkdir()
    with pytest.raises(BundleNotFoundError, match="not a 3MTokenRec bundle"):
        load_bundle("runs/demo")


def test_missing_relevance_and_catalog_are_one_line_errors(bundle, tmp_path, capsys):  # noqa: F811
    root, _ = bundle
    model = str(root / "model")
    rock = ["--query", "rock"]
    cases = [([*rock, "--relevance", str(tmp_path / "relevance")], "relevance model", "no such directory"),
             ([*rock, "--relevance", str(tmp_path)], "relevance model", "not a relevance model"),
             ([*rock, "--catalog", str(tmp_path / "catalog.parquet")], "catalog", "no such file"),
             (["--query", ""], "empty query", ""),
             ([*rock, "--k", "0"], "k must be a positive integer", ""),
             ([], "give at least one --query", "")]
    for extra, what, why in cases:
        argv = ["--bundle", model, *extra]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, extra
        line = _one_line_error(capsys.readouterr().err)
        assert what in line and why in line, line


def test_json_lines_are_the_records_of_recommend(bundle, rec):  # noqa: F811
    root, _ = bundle
    queries = ["play some rock", "90s rock"]
    proc = _cli("--bundle", str(root / "model"), "--catalog", str(root / "run" / "catalog.parquet"),
                "--num_beams", "2", "--k", "4", "--format", "json", "--query", *queries)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["query"] for r in lines] == queries
    for line, expected in zip(lines, rec.recommend(queries, k=4)):
        assert line["tracks"] == expected
        assert [t["rank"] for t in line["tracks"]] == [1, 2, 3, 4]
        assert all({"title", "artist", "track_id", "score", "matched"} <= set(t) for t in line["tracks"])


def test_table_is_the_default(bundle, rec, capsys):  # noqa: F811
    root, _ = bundle
    main(["--bundle", str(root / "model"), "--catalog", str(root / "run" / "catalog.parquet"), "--num_beams", "2",
          "--k", "3", "--query", "rock", "jazz"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "query: rock" and out[1].split() == list(TABLE_COLUMNS)
    expected = rec.recommend(["rock"], k=3)[0]
    for row, track in zip(out[2:5], expected):
        cells = row.split()
        assert cells[0] == str(track["rank"]) and track["track_id"] in cells and track["title"].split()[1] in cells
    assert out[5] == "" and out[6] == "query: jazz" and len(out) == 11


def test_python_api_rejects_bad_requests_and_takes_one_k_per_request(rec):
    for texts, k in [([""], 5), (["  "], 5), (["rock"], 0), (["rock"], -1), (["rock", "jazz"], [3])]:
        with pytest.raises(RequestError):
            rec.recommend(texts, k=k)
    out = rec.recommend(["rock", "jazz"], k=[2, 5])
    assert [len(r) for r in out] == [2, 5]
    assert out[1] == rec.recommend(["jazz"], k=5)[0]


def test_generate_shows_progress_over_several_batches(rec, capsys):
    rec.generate(["rock"], batch_size=1)
    assert "generate" not in capsys.readouterr().err
    gens = rec.generate(["rock", "jazz", "play some rock"], batch_size=2)
    assert len(gens) == 3 and "generate" in capsys.readouterr().err
