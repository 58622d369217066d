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
