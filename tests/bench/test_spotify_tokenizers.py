"""The benchmark's comparison tables from per-method results (no training): one summary row per tokenizer, n/a
reconstruction for a tokenizer without decoder, the FusID conflict note."""

from bench.spotify_tokenizers import comparison_markdown, fusid_conflict_note


def _result(mse, conflict_rate):
    ks = [10, 50]
    metrics = {f"{m}@{k}": 0.1 for m in ("precision", "recall", "hit") for k in ks}
    ids = [{"subset": s, "disambiguation": d, "tracks": 10, "cardinality": 9, "conflict_groups": 1,
            "tracks_in_conflict": 2, "conflict_rate": 0.0 if d else conflict_rate, "max_group": 2}
           for s in ("all", "train", "test") for d in (False, True)]
    return {"reconstruction": {"rows": [{"modality": "BM", "mse": mse, "cosine": None if mse is None else 0.9},
                                        {"modality": "average", "mse": mse, "cosine": None if mse is None else 0.9}]},
            "id_quality": {"levels": [{"cur_train": 0.1, "cur_test": 0.2}], "ids": ids},
            "cbr": {"k": ks, "rows": [{"name": "multimodal", "metrics": metrics}]},
            "cost": {"groups": ["FU"], "music_tokens": 5120, "vocabulary": 5125, "tokens_per_track": 6},
            "trained": "this run", "epochs": 100}


def test_comparison_tables_and_fusid_note():
    results = {"rqvae": _result(0.01, 0.0), "fusid": _result(None, 0.2)}
    text = comparison_markdown(results)
    assert "| rqvae | this run | 100 | 0.0100 / 0.900 |" in text
    assert "| fusid | this run | 100 | n/a |" in text
    assert "| fusid | n/a | n/a |" in text  # per-modality reconstruction table
    note = fusid_conflict_note(results["fusid"])
    assert "conflict rate 0.2000 without `<ID-k>`" in note
    assert "conflict rate 0 without" in fusid_conflict_note(_result(None, 0.0))
