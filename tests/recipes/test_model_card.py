"""The bundle's model card names the base model, the data, the token database, and a snippet that runs."""

import numpy as np

from recipes.sft.bundle import model_card, save_bundle_extras
from tokenizer_ext.token_db import TokenDB


def test_model_card_names_what_the_bundle_is(tmp_path):
    rng = np.random.default_rng(0)
    db = TokenDB([f"t{i}" for i in range(5)], {"ST": (4, 4, 4)}, {"ST": rng.integers(0, 4, (5, 3))}, "rqkmeans")
    db.save(tmp_path / "tok")
    counts = {"train": 12, "test": 3, "dqt_files": {"runs/x/dqt/basic/dqt.parquet": {"rows": 15, "repeat": 1}},
              "alignment_tasks": {"desc2id": 5}}
    save_bundle_extras(tmp_path / "model", tmp_path / "tok", system_prompt="s", sft_counts=counts)
    text = model_card(tmp_path / "model", "HuggingFaceTB/SmolLM2-135M-Instruct", {"max_steps": 40},
                      {"T2MR P@10 (demo playlists)": 0.05})
    assert "None" not in text and (tmp_path / "model" / "README.md").read_text() == text
    for expected in ("base_model: HuggingFaceTB/SmolLM2-135M-Instruct", "`runs/x/dqt/basic/dqt.parquet` | 15",
                     "desc2id (5)", "rqkmeans", "5 tracks", "T2MR P@10 (demo playlists): 0.05",
                     "music3m-serve --bundle", "Recommender.from_pretrained"):
        assert expected in text, expected


def test_evaluations_go_into_the_card_and_replace_their_earlier_run(tmp_path):
    from recipes.sft.bundle import record_evaluation

    rng = np.random.default_rng(0)
    db = TokenDB([f"t{i}" for i in range(5)], {"ST": (4, 4, 4)}, {"ST": rng.integers(0, 4, (5, 3))})
    db.save(tmp_path / "tok")
    save_bundle_extras(tmp_path / "model", tmp_path / "tok", system_prompt="s")
    model_card(tmp_path / "model", "base/model", {"max_steps": 1})
    record_evaluation(tmp_path / "model", "T2MR on eval", ["3MTokenRec: P@10 0.0100"])
    record_evaluation(tmp_path / "model", "T2MR on val", ["3MTokenRec: P@10 0.0500"])
    record_evaluation(tmp_path / "model", "T2MR on eval", ["3MTokenRec: P@10 0.0200", "BM25: P@10 0.0600"])
    text = (tmp_path / "model" / "README.md").read_text()
    assert text.count("## Evaluation") == 1 and text.index("## Evaluation") < text.index("## Usage")
    assert "P@10 0.0100" not in text and "- 3MTokenRec: P@10 0.0200" in text and "- BM25: P@10 0.0600" in text
    assert "### T2MR on val" in text and text.count("### T2MR on eval") == 1
