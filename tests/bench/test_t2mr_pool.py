"""Pooling T2MR results of several folds: each request counts once; paired differences to BM25."""

import json

import numpy as np
import pytest

from bench.t2mr_pool import pool, table


def _write(path, systems):
    path.write_text(json.dumps({"systems": {n: {"P@10 per request": v} for n, v in systems.items()}}))
    return str(path)


def test_pool_weights_requests_not_files(tmp_path):
    a = _write(tmp_path / "a.json", {"m": [0.1] * 10, "BM25": [0.2] * 10})
    b = _write(tmp_path / "b.json", {"m": [0.4] * 30, "BM25": [0.1] * 30, "only_b": [0.0] * 30})
    out = pool([a, b])
    assert out["m"]["requests"] == 40 and out["m"]["files"] == 2
    assert out["m"]["P@10"] == pytest.approx((0.1 * 10 + 0.4 * 30) / 40)  # not the mean of the two files' means
    lo, hi = out["m"]["P@10 - BM25 95% CI"]
    assert lo <= out["m"]["P@10"] - (0.2 * 10 + 0.1 * 30) / 40 <= hi
    assert "P@10 - BM25 95% CI" not in out["BM25"]
    assert out["only_b"]["requests"] == 30 and out["only_b"]["P@10 95% CI"] == pytest.approx((0.0, 0.0))
    text = table(out)
    assert text.index("| m |") < text.index("| BM25 |") < text.index("| only_b |")  # best first


def test_pool_refuses_results_without_per_request_values(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"systems": {"m": {"metrics": {"P@10": 0.1}}}}))
    with pytest.raises(ValueError, match="P@10 per request"):
        pool([str(path)])


def test_pool_reads_what_t2mr_writes(tmp_path):
    from eval.metrics import precision_per_query

    ranked = np.array([[1, 2, 3], [4, 5, 6]])
    values = precision_per_query(ranked, [{1, 2}, {9}], 10).tolist()
    assert values == [0.2, 0.0]
    out = pool([_write(tmp_path / "t.json", {"m": values})])
    assert out["m"]["P@10"] == pytest.approx(0.1)


def test_average_scores_the_per_request_mean_of_seed_replicates(tmp_path):
    from bench.t2mr_pool import parse_averages

    a = _write(tmp_path / "a.json", {"s42 [beams, 16 beams]": [0.0, 0.2, 0.4], "s43": [0.2, 0.2, 0.0],
                                     "BM25": [0.1, 0.1, 0.1]})
    b = _write(tmp_path / "b.json", {"s42 [beams, 16 beams]": [0.6], "BM25": [0.0]})  # no s43: the average skips b
    out = pool([a, b], averages=parse_averages(["mean=s42 [beams, 16 beams] + s43"]))
    assert out["mean"]["files"] == 1 and out["mean"]["requests"] == 3
    assert out["mean"]["P@10"] == pytest.approx((0.1 + 0.2 + 0.2) / 3)
    lo, hi = out["mean"]["P@10 - BM25 95% CI"]
    assert lo <= out["mean"]["P@10"] - 0.1 <= hi and hi - lo < 0.2  # paired: the seeds' spread is averaged away
    assert out["s42 [beams, 16 beams]"]["requests"] == 4  # the members keep their own rows
    for bad in (["mean"], ["mean=s42"], ["=s42 + s43"]):
        with pytest.raises(ValueError, match="--average"):
            parse_averages(bad)
    c = _write(tmp_path / "c.json", {"s42": [0.1], "s43": [0.1, 0.2]})
    with pytest.raises(ValueError, match="different requests"):
        pool([c], averages={"mean": ["s42", "s43"]})
