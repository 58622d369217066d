"""music3m-recommend on the tiny bundle of tests/eval/test_t2mr.py: one-line errors (exit code 2, no traceback) for a
missing bundle, relevance model or catalog, an empty query and k <= 0; JSON lines and the table carry the records of
`Recommender.recommend`; the Python API keeps its shape."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.bundle import BundleNotFoundError, load_bundle, looks_local, resolve_bundle_path
from inference.recommend import TABLE_COLUMNS, Recommender, RequestError, format_table, main
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


def test_a_batch_out_of_gpu_memory_is_retried_smaller(rec, monkeypatch, capsys):
    """A batch whose beams do not fit in GPU memory (as 64 beams of Gemma 3's 262k-token vocabulary did, three
    processes to a GPU) is split until it fits; every request is answered once, in order, as in batches of one."""
    queries = ["rock", "jazz", "play some rock", "piano", "80s hits"]
    alone = [rec.generate([q], batch_size=1)[0] for q in queries]
    real, sizes = rec.model.generate, []

    def small_memory(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(**kwargs)

    monkeypatch.setattr(rec.model, "generate", small_memory)
    gens = rec.generate(queries, batch_size=4)
    assert sizes == [4, 2, 2, 1]  # 4 fails; 2 + 2 fit; the last request alone
    assert [g.beams for g in gens] == [g.beams for g in alone]
    assert "out of GPU memory at 4 requests" in capsys.readouterr().err
    monkeypatch.setattr(rec.model, "generate", lambda **kw: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError):  # one request that does not fit: nothing smaller to try
        rec.generate(["rock"], batch_size=1)


def test_hybrid_answers_fuse_the_generated_and_the_text_rankings(bundle, rec):  # noqa: F811
    from inference.retrieval import reciprocal_rank_fusion, reciprocal_rank_scores
    from inference.text_retrieval import BM25Retriever

    root, _ = bundle
    catalog = root / "run" / "catalog.parquet"
    hybrid = Recommender(load_bundle(root / "model"), num_beams=2, catalog=catalog, hybrid=["bm25"],
                         hybrid_depth=20, rrf_k=5)
    queries = ["rock", "jazz"]
    out = hybrid.recommend(queries, k=8)
    gens = rec.generate(queries)
    bm25 = BM25Retriever().fit(catalog).rank(queries, 20)
    for i, records in enumerate(out):
        generated = [rec.db.track_ids[int(r)] for r in rec.rank([gens[i]], k=20)[0].rows]
        text = [rec.db.track_ids[int(r)] for r in bm25[i] if r >= 0]
        expected = reciprocal_rank_fusion([generated, text], rrf_k=5)[:8]
        scores = reciprocal_rank_scores([generated, text], rrf_k=5)
        assert [t["track_id"] for t in records] == expected and [t["rank"] for t in records] == list(range(1, 9))
        for t in records:
            assert t["score"] == pytest.approx(scores[t["track_id"]], abs=1e-6)
            assert t["sources"] == [n for n, ranked in (("generated", generated), ("bm25", text))
                                    if t["track_id"] in ranked]
            assert bool(t["matched"]) <= ("generated" in t["sources"]) and "title" in t
    # the album word decides BM25 here: the fused top 8 of "rock" holds BM25's top tracks, "rock album" tracks
    assert sum(t["album"] == "rock album" for t in out[0]) > sum(t["album"] == "rock album" for t in out[1])
    table = format_table("rock", out[0]).splitlines()  # the table says where each track came from
    assert table[1].split() == [*TABLE_COLUMNS, "sources"]
    assert table[2].split()[-1] == ",".join(out[0][0]["sources"])


def test_ensemble_fuses_each_models_ranking_with_the_text_rankings(bundle, rec):  # noqa: F811
    from inference.retrieval import reciprocal_rank_fusion
    from inference.text_retrieval import BM25Retriever

    root, _ = bundle
    catalog = root / "run" / "catalog.parquet"
    beams = Recommender(load_bundle(root / "model"), num_beams=3, ranking="beams")
    fused = Recommender(load_bundle(root / "model"), num_beams=3, ranking="beams", catalog=catalog, hybrid=["bm25"],
                        hybrid_depth=20, rrf_k=5, ensemble=[load_bundle(root / "model")])
    assert len(fused.members) == 1 and fused.members[0].ranking == "beams" and fused.members[0].num_beams == 3
    queries = ["rock", "jazz", "play some rock"]
    out = fused.recommend(queries, k=6)
    gens = beams.generate(queries)
    bm25 = BM25Retriever().fit(catalog).rank(queries, 20)
    differs = 0
    for i, records in enumerate(out):
        generated = [beams.db.track_ids[int(r)] for r in beams.rank([gens[i]], k=20)[0].rows]
        text = [beams.db.track_ids[int(r)] for r in bm25[i] if r >= 0]
        expected = reciprocal_rank_fusion([generated, generated, text], rrf_k=5)[:6]
        differs += expected != reciprocal_rank_fusion([generated, text], rrf_k=5)[:6]
        assert [t["track_id"] for t in records] == expected
        for t in records:
            in_generated = t["track_id"] in generated
            assert t["sources"] == [n for n, yes in (("generated", in_generated), ("generated_2", in_generated),
                                                     ("bm25", t["track_id"] in text)) if yes]
            assert bool(t["matched"]) <= in_generated
    assert differs  # the second model's ranking counts: without it the order is another


def test_missing_ensemble_bundle_is_one_line(bundle, capsys):  # noqa: F811
    root, _ = bundle
    with pytest.raises(SystemExit) as exit_info:
        main(["--bundle", str(root / "model"), "--ensemble", "runs/no_such_run/sft/model", "--query", "rock"])
    assert exit_info.value.code == 2
    assert "runs/no_such_run/sft/model: no such directory" in _one_line_error(capsys.readouterr().err)


def test_hybrid_needs_known_retrievers_and_a_catalog(bundle, capsys):  # noqa: F811
    root, _ = bundle
    model = str(root / "model")
    for extra, what in [(["--hybrid", "bm25"], "give the catalog too"),
                        (["--hybrid", "tfidf", "--catalog", str(root / "run" / "catalog.parquet")], "['tfidf']")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--bundle", model, "--query", "rock", *extra])
        assert exit_info.value.code == 2
        assert what in _one_line_error(capsys.readouterr().err)


def test_artist_first_from_the_command_line(bundle, capsys):  # noqa: F811
    root, _ = bundle
    catalog = str(root / "run" / "catalog.parquet")
    main(["--bundle", str(root / "model"), "--catalog", catalog, "--num_beams", "2", "--k", "6",
          "--artist_first", "true", "--format", "json", "--query", "rock"])
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    assert len(tracks) == 6 and len({t["artist"] for t in tracks}) == 1  # every artist here has more than six tracks
    with pytest.raises(SystemExit) as exit_info:  # the artist comes from the catalog: without one, a one-line error
        main(["--bundle", str(root / "model"), "--artist_first", "true", "--query", "rock"])
    assert exit_info.value.code == 2 and "artist" in _one_line_error(capsys.readouterr().err)
