"""The experiment runner's plan handling: recipe options, generation targets per decoding mode, saved selection."""

import json
from pathlib import Path

import pytest

from bench import t2mr_experiments as te

PLAN = {
    "run_dir": "runs/x",
    "defaults": {"config": "c.yaml", "max_steps": 600, "dqt_path": ["{R}/dqt/basic/dqt.parquet"]},
    "sets": {"val": "{R}/splits/val.jsonl", "seen": "{R}/splits/seen.jsonl"},
    "generate": {"num_beams": 8, "modes": {"catalog": ["val", "seen"], "modality": ["val"]}},
    "runs": [{"name": "a", "args": {"max_steps": 1500}}],
}


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_commands_generate_each_mode_into_its_own_folder(tmp_path):
    cmds = te.commands(PLAN, PLAN["runs"][0], tmp_path / "a", "cpu")
    recipe, gens = cmds[0], cmds[1:]
    assert _flag(recipe, "--max_steps") == "1500" and _flag(recipe, "--dqt_path") == "runs/x/dqt/basic/dqt.parquet"
    got = [(_flag(c, "--mode"), _flag(c, "--playlists"), Path(_flag(c, "--out_dir")).name) for c in gens]
    assert got == [("catalog", "runs/x/splits/val.jsonl", "t2mr_val"),
                   ("catalog", "runs/x/splits/seen.jsonl", "t2mr_seen"),
                   ("modality", "runs/x/splits/val.jsonl", "t2mr_val_modality")]
    assert all(_flag(c, "--num_beams") == "8" for c in gens)


def test_modes_as_a_list_cover_every_set_and_unknown_sets_are_refused():
    plan = {**PLAN, "generate": {"modes": ["catalog", "modality"]}}
    assert te.generation_targets(plan) == [("catalog", "val"), ("catalog", "seen"),
                                           ("modality", "val"), ("modality", "seen")]
    assert te.generation_targets({**PLAN, "generate": {}}) == [("catalog", "val"), ("catalog", "seen")]
    with pytest.raises(ValueError, match="eval"):
        te.generation_targets({**PLAN, "generate": {"modes": {"modality": ["eval"]}}})


def test_sets_and_modes_restrict_the_generations(tmp_path):
    plan = json.loads(json.dumps(PLAN))
    te.restrict(plan, [], ["catalog"])
    assert te.generation_targets(plan) == [("catalog", "val"), ("catalog", "seen")]
    plan = json.loads(json.dumps({**PLAN, "generate": {"modes": ["catalog", "modality"]}}))
    te.restrict(plan, ["val"], [])
    assert te.generation_targets(plan) == [("catalog", "val"), ("modality", "val")]
    plan = json.loads(json.dumps(PLAN))
    te.restrict(plan, ["val"], ["modality"])
    assert te.generation_targets(plan) == [("modality", "val")]
    with pytest.raises(ValueError, match="sampling"):
        te.restrict(json.loads(json.dumps(PLAN)), [], ["sampling"])
    plan = json.loads(json.dumps(PLAN))
    te.restrict(plan, [], [], num_beams=64)  # --num_beams: more beams saved than the plan's 8
    assert all(_flag(c, "--num_beams") == "64" for c in te.commands(plan, plan["runs"][0], tmp_path / "a", "cpu")[1:])


def test_a_saved_selection_is_reused_and_inherited(tmp_path, monkeypatch):
    plan = {**PLAN, "select": {"plan": "missing.yaml", "from": "nowhere", "set": "val"},
            "runs": [{"name": "final", "inherit": "best"}, {"name": "paper"}]}
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(json.dumps(plan))
    out = tmp_path / "out"
    out.mkdir()
    (out / "selection.json").write_text(json.dumps({"best": "text", "args": {"new_token_init": "text"}, "scores": {}}))
    seen = []
    monkeypatch.setattr(te, "run_one", lambda p, r, a: seen.append(te.run_options(p, r)) or {"name": r["name"]})
    te.main(["--plan", str(plan_file), "--out_dir", str(out), "--parallel", "1"])
    assert seen[0]["new_token_init"] == "text" and "new_token_init" not in seen[1]
    assert json.loads((out / "selection.json").read_text())["best"] == "text"


def test_selection_pools_folds_by_requests(tmp_path, monkeypatch):
    val_plan = tmp_path / "val.yaml"
    val_plan.write_text(json.dumps({**PLAN, "runs": [{"name": "a"}, {"name": "b", "args": {"max_steps": 9}}]}))
    # the plan's own fold alone would choose a
    by_fold = {"runs/x": {"a": _scored(0.10, 60), "b": _scored(0.04, 60)},
               "runs/v1": {"a": _scored(0.00, 240), "b": _scored(0.05, 240)}}
    monkeypatch.setattr(te, "_fold_scores", lambda plan, set_name, fold: by_fold[fold["run_dir"]])
    select = {"plan": str(val_plan), "from": "x", "set": "val"}
    alone = te.select_best(select)
    assert alone["best"] == "a" and alone["margin"]["runner_up"] == "b" and alone["margin"]["requests"] == 60
    assert alone["margin"]["difference"] == pytest.approx(0.06)
    assert alone["margin"]["ci95"] == pytest.approx([0.06, 0.06])
    chosen = te.select_best({**select, "folds": [{"run_dir": "runs/v1", "from": "y"}]})
    assert chosen["best"] == "b" and chosen["args"] == {"max_steps": 9}
    assert chosen["scores"]["a"] == pytest.approx((0.10 * 60 + 0.0 * 240) / 300)
    assert chosen["requests"] == {"a": 300, "b": 300}
    assert [f["from"] for f in chosen["folds"]] == ["x", "y"]  # each fold's own scores, behind the pooled ones
    assert chosen["folds"][1]["scores"] == pytest.approx({"a": 0.0, "b": 0.05})
    assert chosen["folds"][0]["requests"] == {"a": 60, "b": 60}
    # the margin pairs the winner's and the runner-up's requests over both folds: (60 x -0.06 + 240 x 0.05) / 300
    margin = chosen["margin"]
    assert margin["runner_up"] == "a" and margin["requests"] == 300
    assert margin["difference"] == pytest.approx(0.028)
    assert margin["ci95"][0] < 0.028 < margin["ci95"][1]


def test_selection_compares_runs_over_the_same_folds_and_skips_replicates(tmp_path, monkeypatch):
    val_plan = tmp_path / "val.yaml"
    val_plan.write_text(json.dumps({**PLAN, "runs": [{"name": "a"}, {"name": "short"}, {"name": "b"},
                                                     {"name": "a_seed43", "select": False, "args": {"seed": 43}}]}))
    # "short" ran on the easy fold only and "a_seed43" is a seed replicate: either would win on its pooled score
    by_fold = {"runs/x": {"a": _scored(0.10, 60), "short": _scored(0.20, 60), "b": _scored(0.06, 60),
                          "a_seed43": _scored(0.30, 60)},
               "runs/v1": {"a": _scored(0.02, 60), "b": _scored(0.03, 60), "a_seed43": _scored(0.30, 60)}}
    monkeypatch.setattr(te, "_fold_scores", lambda plan, set_name, fold: by_fold[fold["run_dir"]])
    chosen = te.select_best({"plan": str(val_plan), "from": "x", "set": "val",
                             "folds": [{"run_dir": "runs/v1", "from": "y"}]})
    assert chosen["best"] == "a" and chosen["margin"]["runner_up"] == "b"
    assert chosen["scores"]["short"] == pytest.approx(0.20) and chosen["scores"]["a_seed43"] == pytest.approx(0.30)
    assert chosen["not_eligible"] == {"short": "scored on 1 of the 2 folds", "a_seed43": "select: false"}
    assert "`short` (scored on 1 of the 2 folds); `a_seed43` (select: false)" in te.fold_table(chosen)


def _scored(value, requests):
    """What _fold_scores gives for one run: (selection score, requests, per-request P@10), here every request alike."""
    return value, requests, [value] * requests


def test_selection_variant_is_the_best_variant_on_unseen_requests():
    t2mr = {"systems": {
        "x": {"metrics": {"P@10": 0.2}, "P@10 unseen": 0.1, "seen": [True, False, False],
              "P@10 per request": [0.4, 0.2, 0.0]},
        "x [match, 4 beams]": {"metrics": {"P@10": 0.1}, "P@10 unseen": 0.15, "seen": [True, False, False],
                               "P@10 per request": [0.0, 0.1, 0.2]}}}
    assert te.selection_variant(t2mr) == (0.15, [0.1, 0.2])  # the seen request's 0.0 left out
    no_split = {"systems": {"y": {"metrics": {"P@10": 0.3}, "P@10 per request": [0.3, 0.3]}}}
    assert te.selection_variant(no_split) == (0.3, [0.3, 0.3])


def test_select_only_chooses_again_from_another_folder_and_trains_nothing(tmp_path, monkeypatch):
    val_plan = tmp_path / "val.yaml"
    val_plan.write_text(json.dumps({**PLAN, "runs": [{"name": "a"}, {"name": "b", "args": {"max_steps": 9}}]}))
    plan = {**PLAN, "select": {"plan": str(val_plan), "from": "runs/old", "set": "val"},
            "runs": [{"name": "final", "inherit": "best"}]}
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(json.dumps(plan))
    out = tmp_path / "out"
    out.mkdir()
    (out / "selection.json").write_text(json.dumps({"best": "a", "args": {}, "scores": {}}))  # an earlier choice
    folders = []
    monkeypatch.setattr(te, "_fold_scores",
                        lambda p, set_name, fold: folders.append(fold["from"]) or {"a": _scored(0.05, 61),
                                                                                   "b": _scored(0.06, 61)})
    monkeypatch.setattr(te, "run_one", lambda *a: pytest.fail("--select_only trained a run"))
    te.main(["--plan", str(plan_file), "--out_dir", str(out), "--select_from", "runs/combined",
             "--select_only", "true"])
    assert folders == ["runs/combined"]
    chosen = json.loads((out / "selection.json").read_text())
    assert chosen["best"] == "b" and chosen["args"] == {"max_steps": 9}
    with pytest.raises(SystemExit, match="need a plan with `select`"):
        te.main(["--plan", str(val_plan), "--out_dir", str(out), "--select_only", "true"])


def test_runs_side_by_side_share_the_cpu(tmp_path, monkeypatch):
    envs = []

    class Done:
        returncode = 0

    monkeypatch.setattr(te.subprocess, "run", lambda cmd, **kw: envs.append(kw["env"]) or Done())
    monkeypatch.setattr(te.os, "cpu_count", lambda: 32)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = te.ExperimentArguments(plan="p.yaml", out_dir=str(tmp_path / "a"), parallel=5)
    te.run_one(PLAN, PLAN["runs"][0], args)
    assert len(envs) == 4 and {e["OMP_NUM_THREADS"] for e in envs} == {"6"}  # the recipe and its 3 generations
    assert te.run_env(1).get("OMP_NUM_THREADS") is None  # one run alone keeps torch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the caller's choice wins (make t2mr_gpu_folds sets it per GPU)
    assert te.run_env(5)["OMP_NUM_THREADS"] == "2"
