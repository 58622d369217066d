"""The modality-relevance model: trains on a D_r file, reports held-out metrics, saves and loads."""

import json

import numpy as np
import pytest

from common.registry import MODALITY_NAMES
from recipes.relevance import RelevanceConfig, RelevanceModel, metrics, read_dr, train


def test_metrics_by_hand():
    pred = np.zeros((2, 9))
    pred[0, 0], pred[1, 0] = 7.4, 2.6
    target = np.zeros((2, 9))
    target[0, 0], target[1, 0] = 7, 2
    m = metrics(pred, target)
    assert m["accuracy"] == pytest.approx(17 / 18)  # only (row 1, AC): round(2.6) = 3 != 2
    assert m["mae"] == pytest.approx((0.4 + 0.6) / 18)
    assert m["per_modality"]["AC"]["accuracy"] == 0.5


def _dr(tmp_path, n=48):
    # artist queries make BM relevant, era queries make RI relevant: a pattern the model must learn
    rows = []
    for i in range(n):
        artist = i % 2 == 0
        scores = dict.fromkeys(MODALITY_NAMES, 1)
        scores["BM" if artist else "RI"] = 9
        query = f"songs by artist number {i}" if artist else f"hits from the {1950 + 10 * (i % 7)}s"
        rows.append({"query": query, "track_id": f"t{i}", "split": "test" if i % 4 == 3 else "train", **scores})
    path = tmp_path / "dr.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_predict_save_load(tmp_path):
    report = train(RelevanceConfig(dr=str(_dr(tmp_path)), out_dir=str(tmp_path / "rel"), epochs=12, lr=2e-3,
                                   batch_size=12))
    assert report["train"] == 36 and report["test"] == 12
    assert report["history"][-1]["train_mse"] < report["history"][0]["train_mse"] / 3
    assert 0 <= report["test_metrics"]["mae"] <= 10 and 0 <= report["test_metrics"]["accuracy"] <= 1
    # train is 2/3 artist and 1/3 era rows, so the constant reference predicts BM 19/3 and RI 11/3; every test row
    # is an era row (BM 1, RI 9): off by 16/3 on two of the nine modalities
    assert report["constant_baseline_metrics"]["mae"] == pytest.approx(32 / 27, rel=1e-6)
    assert report["distinct_train_score_vectors"] == 2
    assert report["test_metrics"]["mae"] < report["constant_baseline_metrics"]["mae"]
    model = RelevanceModel.load(tmp_path / "rel")
    scores = model.predict(["songs by artist number 99", "hits from the 1970s"])
    assert scores.shape == (2, 9) and (scores >= 0).all() and (scores <= 10).all()
    bm, ri = MODALITY_NAMES.index("BM"), MODALITY_NAMES.index("RI")
    assert scores[0, bm] > scores[0, ri] and scores[1, ri] > scores[1, bm]


def test_bad_dr_rows_name_the_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query": "x", **dict.fromkeys(MODALITY_NAMES, 3), "TC": 11}) + "\n")
    with pytest.raises(ValueError, match="row 1: field 'TC'"):
        read_dr(path)
