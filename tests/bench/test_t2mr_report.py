"""bench.t2mr_report's choice of ranking and weights on validation: the neighbours ranking competes with matching,
each with the weights tuned for it, and the choice names the weights file of the ranking it chose."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.t2mr_report import T2MRReportConfig, choose_setting
from tests.eval.helpers import write_playlist_file, write_store
from tokenizer_ext.token_db import TokenDB

N = 40  # four content clusters of ten tracks (rows 10c..10c+9); level-1 codes cut across them (row % 4)


def _setup(tmp_path, members_by: str):
    rng = np.random.default_rng(0)
    ids = [f"t{i:02d}" for i in range(N)]
    codes = np.stack([np.arange(N) % 4, (np.arange(N) // 4) % 10], axis=1).astype(np.int32)
    db = TokenDB(ids, {"BM": (4, 10)}, {"BM": codes})
    run_dir = tmp_path / "run"
    db.save(run_dir / "tokenizers" / "tok")
    pq.write_table(pa.table({"track_id": ids, "artist": [f"a{i % 5}" for i in range(N)]}), run_dir / "catalog.parquet")
    centres = np.eye(4) * 5
    content = centres[np.arange(N) // 10] + rng.normal(scale=0.3, size=(N, 4))
    write_store(run_dir, ids, {"BM": (content, np.ones(N, bool))})
    # playlists: the tracks of one content cluster, or the tracks of one level-1 code
    groups = [list(range(10 * c, 10 * c + 10)) if members_by == "content" else list(range(c, N, 4))
              for c in range(4)]
    write_playlist_file(run_dir / "val.jsonl", {f"p{c}": [ids[r] for r in g] for c, g in enumerate(groups)})
    gen_dir = tmp_path / "val" / "best" / "t2mr_val"
    gen_dir.mkdir(parents=True)
    (gen_dir / "generations_best.json").write_text(json.dumps({
        "token_db_dir": str(run_dir / "tokenizers" / "tok"), "num_beams": 2, "name": "best",
        "queries": [f"p{c}" for c in range(4)], "seen": None,
        "generations": [{"beams": [db.tokens(g[0]), db.tokens(g[1])], "logprobs": [-0.1, -0.2]} for g in groups]}))
    plan = {"run_dir": str(run_dir), "sets": {"val": "{R}/val.jsonl"}}
    cfg = T2MRReportConfig(val_dir=str(tmp_path / "val"), work_dir=str(tmp_path / "work"), relevance=None)
    return cfg, plan


@pytest.mark.parametrize("members_by, ranking", [("content", "neighbours"), ("codes", "match")])
def test_choice_takes_the_ranking_that_fits_the_playlists_with_its_own_weights(tmp_path, members_by, ranking):
    cfg, plan = _setup(tmp_path, members_by)
    table, choice = choose_setting(cfg, plan, "best")
    assert choice["ranking"] == ranking, table
    group_dir = "choose/neighbours" if ranking == "neighbours" else "choose"
    assert choice["weights_file"] == f"{cfg.work_dir}/{group_dir}/weights_best.json"
    assert choice["tuned_weights"] == {"BM": 1.0}
    # both groups' rows are in the table, the neighbours rows labelled with their ranking
    assert "[neighbours, 2 beams]" in table and "[match, 1 beams]" in table
    assert "(chosen)" in table.splitlines()[2]
    # every variant is also scored led by its top track's artist (the catalog names artists); the choice says which
    assert ", artist first" in table and choice["artist_first"] == (", artist first" in choice["label"])


def test_the_report_says_how_far_the_winner_leads():
    from bench.t2mr_report import margin_sentence

    selection = {"best": "b", "margin": {"runner_up": "a", "difference": 0.0066, "ci95": [-0.0131, 0.0262],
                                         "requests": 61}}
    assert margin_sentence(selection) == (" It leads the runner-up, `a`, by +0.0066 P@10 over 61 requests (paired 95% "
                                          "interval [-0.0131, +0.0262]).")
    assert margin_sentence({"best": "b"}) == ""  # a selection.json written before margins


def test_the_report_shows_each_folds_scores():
    from bench.t2mr_experiments import fold_table

    selection = {"best": "b", "scores": {"a": 0.028, "b": 0.042}, "requests": {"a": 300, "b": 300},
                 "folds": [{"from": "runs/v0", "scores": {"a": 0.10, "b": 0.04}, "requests": {"a": 60, "b": 60}},
                           {"from": "runs/v1", "scores": {"a": 0.01, "b": 0.0425}, "requests": {"a": 240, "b": 240}},
                           {"from": "runs/v2", "scores": {}, "requests": {}}]}  # a fold not run yet: no row
    lines = fold_table(selection).splitlines()
    assert lines[0] == "| validation fold (its runs' folder) | requests | `a` | `b` |"
    assert lines[2:] == ["| runs/v0 | 60 | 0.1000 | 0.0400 |", "| runs/v1 | 240 | 0.0100 | 0.0425 |",
                         "| pooled | 300 | 0.0280 | **0.0420** |"]
    assert fold_table({**selection, "folds": selection["folds"][:1]}) == ""  # one fold: the scores say it all
    assert fold_table({"best": "b", "scores": {"b": 0.04}}) == ""  # a selection.json written before folds


def _two_folds(tmp_path, members: tuple[str, str]):
    folds = []
    for i, members_by in enumerate(members):
        cfg, plan = _setup(tmp_path / f"f{i}", members_by)
        folds.append(f"{plan['run_dir']}={cfg.val_dir}")
    return T2MRReportConfig(work_dir=str(tmp_path / "work"), relevance=None, val_folds=folds), plan


@pytest.mark.parametrize("members, ranking", [(("content", "content"), "neighbours"), (("codes", "codes"), "match")])
def test_the_choice_over_folds_pools_their_requests(tmp_path, members, ranking):
    from bench.t2mr_report import choose_setting_folds

    cfg, plan = _two_folds(tmp_path, members)
    table, choice = choose_setting_folds(cfg, plan, "best")
    assert choice["ranking"] == ranking and choice["weights"] == "equal" and choice["folds"] == cfg.val_folds, table
    assert "(chosen)" in table.splitlines()[2] and "| 8 |" in table.splitlines()[2]  # 4 requests per fold
    # the chosen row is the best mean over both folds' requests, read back from each fold's own scores
    per = [json.loads((tmp_path / "work" / "choose_folds" / str(i) / "t2mr.json").read_text())["systems"]
           for i in range(2)]
    pooled = {k: np.mean(per[0][k]["P@10 per request"] + per[1][k]["P@10 per request"]) for k in per[0]
              if "ranking" in per[0][k]}
    assert pooled[choice["label"]] == max(pooled.values())
    row = per[0][choice["label"]]
    assert (row["ranking"], row["beams"]) == (choice["ranking"], choice["beams"])
    # every variant was scored led by its top track's artist too; the choice says which of the two it is
    assert any(k.endswith(", artist first") for k in pooled)
    assert choice["artist_first"] == row.get("artist_first", False) == choice["label"].endswith(", artist first")


def test_the_choice_over_folds_names_a_fold_without_generations(tmp_path):
    from bench.t2mr_report import choose_setting_folds

    cfg, plan = _two_folds(tmp_path, ("content", "codes"))
    cfg.val_folds[1] = cfg.val_folds[1].split("=")[0] + f"={tmp_path / 'missing'}"
    with pytest.raises(SystemExit, match="missing"):
        choose_setting_folds(cfg, plan, "best")
