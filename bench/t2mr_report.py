"""Score the saved generations of the T2MR experiments (no GPU) -> the ablation and final tables in markdown.

    python -m bench.t2mr_report --val_dir runs/t2mr_val --eval_dir runs/t2mr_eval --out docs/t2mr_results.md

1. Validation (61 playlists carved from the training playlists): every SFT run of the ablation, equal weights,
   3MTokenRec's matching and the beams ranking, against BM25 and dense retrieval on the same playlists.
2. Decoding and ranking levers of the run chosen on validation (bench.t2mr_experiments' selection): beams, ranking,
   modality weights (equal, tuned on validation, relevance model, relevance x tuned prior); the best on validation is
   the setting of the final table.
3. Evaluation (77 playlists, reported once): every final run with that setting, 3MTokenRec's unimodal variants, the
   text baselines, seen / unseen requests and the retrieval ceilings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from bench.t2mr_experiments import fmt_score as _p
from bench.t2mr_experiments import fold_table, set_dir
from bench.t2mr_pool import pool
from common.config import parse_config
from eval.common import fmt_interval
from eval.t2mr import T2MRConfig, run


@dataclass
class T2MRReportConfig:
    """Tables of the Spotify T2MR experiments from their saved generations."""

    val_dir: str = field(default="runs/t2mr_val", metadata={"help": "out_dir of the validation plan"})
    eval_dir: str = field(default="runs/t2mr_eval", metadata={"help": "out_dir of the final plan"})
    val_plan: str = field(default="recipes/SmolLM2-135M-Instruct/t2mr/val_ablation.yaml", metadata={"help": "plan"})
    eval_plan: str = field(default="recipes/SmolLM2-135M-Instruct/t2mr/eval_final.yaml", metadata={"help": "plan"})
    relevance: str | None = field(default=None, metadata={
        "help": "relevance model trained on the validation run's derived D_r (music3m-relevance)"})
    work_dir: str = field(default="runs/t2mr_report", metadata={"help": "scratch folder for the t2mr outputs"})
    baselines: list[str] = field(default_factory=lambda: ["bm25", "dense"], metadata={
        "help": "text baselines of the final table (bm25, dense, artist_track_name)"})
    out: str = field(default="runs/t2mr_report/t2mr_results.md", metadata={"help": "markdown report"})
    val_folds: list[str] = field(default_factory=list, metadata={
        "help": "choose the decoding and ranking on these validation folds instead of val_dir's run: RUN_DIR=OUT_DIR "
                "pairs of bench.t2mr_experiments (e.g. runs/spotify_val_f1=runs/t2mr_val_f1); every ranking and beam "
                "count with equal weights, P@10 pooled over the folds' requests. No weights are tuned: weights tuned "
                "on one fold's features do not carry over to another's"})
    final: bool = field(default=True, metadata={
        "help": "also score the evaluation playlists (false: validation only, to settle the choices first)"})


def _gen(out_dir: str, name: str, set_name: str, mode: str = "catalog") -> Path:
    return Path(out_dir) / name / set_dir(set_name, mode) / f"generations_{name}.json"


MASK_LABEL = " [modality mask]"  # label suffix of generations decoded with the per-modality mask
# rankings scored on validation; each group shares the modality weights tuned on its first ranking
RANKING_GROUPS = (("match", "beams"), ("neighbours",))
# rankings scored over several validation folds (choose_setting_folds; equal weights)
FOLD_RANKINGS = ("match", "beams", "neighbours")
# beam counts scored besides every beam the generations hold (eval.t2mr skips counts not below it)
BEAMS_SCORED = [1, 4, 16, 32]


def validation(cfg: T2MRReportConfig, plan: dict) -> tuple[str, dict]:
    run_dir, names = plan["run_dir"], [r["name"] for r in plan["runs"]]
    done = [n for n in names if _gen(cfg.val_dir, n, "val").exists()]
    if not done:  # e.g. only the folds of --val_folds were trained
        return f"No validation generations in {cfg.val_dir}.", {}
    val_set = plan["sets"]["val"].replace("{R}", run_dir)
    seen_set = plan["sets"]["seen"].replace("{R}", run_dir)
    base = dict(run_dir=run_dir, unimodal=False, num_beams=16, k=10)
    val = run(T2MRConfig(**base, playlists=val_set, out_dir=f"{cfg.work_dir}/val",
                         generations=[f"{n}={_gen(cfg.val_dir, n, 'val')}" for n in done],
                         rankings=["match", "beams"], beams_used=BEAMS_SCORED, baselines=["bm25", "dense"]))
    seen = run(T2MRConfig(**base, playlists=seen_set, out_dir=f"{cfg.work_dir}/val_seen",
                          generations=[f"{n}={_gen(cfg.val_dir, n, 'seen')}" for n in done
                                       if _gen(cfg.val_dir, n, "seen").exists()],
                          rankings=["match"], baselines=["bm25"], diagnostics=False))
    logs = {n: json.loads((Path(cfg.val_dir) / n / "done.json").read_text()) for n in done}
    s, d = val["systems"], val["diagnostics"]
    lines = ["| run | what it adds | steps | P@10 match, 16 beams | P@10 beams ranking, 16 beams | "
             "P@10 match, 1 beam | P@10 on training playlists (seen set) | distinct top beams | "
             "top beam's level-1 BM / ST / RI code = playlist's | final loss |", "|" + "---|" * 10]
    notes = {r["name"]: r.get("note", "") for r in plan["runs"]}
    for n in names:
        if n not in done:
            lines.append(f"| {n} | {notes.get(n, '')} | no generations in {cfg.val_dir} |" + " |" * 7)
            continue
        eq = f"{n} w/o modality selection"
        agree = d[n]["level1_agreement"]
        loss = logs[n].get("loss") or [[None, None]]
        lines.append(" | ".join([
            f"| {n}", notes.get(n, ""), str(logs[n]["options"].get("max_steps")),
            _p(s.get(f"{eq} [match, 16 beams]", s[eq])["metrics"]["P@10"]),
            _p(s[f"{eq} [beams, 16 beams]"]["metrics"]["P@10"]), _p(s[f"{eq} [match, 1 beams]"]["metrics"]["P@10"]),
            _p(seen["systems"].get(eq, {}).get("metrics", {}).get("P@10")),
            f"{d[n]['distinct_top_beam_tracks']} of {d[n]['requests']}",
            " / ".join(_p(agree[m]["share"]) for m in ("BM", "ST", "RI")), str(loss[-1][1])]) + " |")
    for b in ("BM25", "Dense (MiniLM)"):
        lines.append(f"| {b} | text baseline | - | {_p(s[b]['metrics']['P@10'])} | | | "
                     f"{_p(seen['systems'].get(b, {}).get('metrics', {}).get('P@10'))} | | | |")
    return "\n".join(lines), {"val": val, "seen": seen}


def _relevance(cfg: T2MRReportConfig) -> str | None:
    """The relevance model's folder when it was given and exists (else modality selection is not scored)."""
    return cfg.relevance if cfg.relevance and Path(cfg.relevance).exists() else None


def _names_artists(run_dir: str) -> bool:
    """Does the run's catalog name artists? Then every variant is also scored led by its top track's artist
    (`--artist_first`, docs/t2mr.md round 20)."""
    return "artist" in pq.read_schema(Path(run_dir) / "catalog.parquet").names


def choose_setting(cfg: T2MRReportConfig, plan: dict, best: str) -> tuple[str, dict]:
    """Decoding, ranking and modality weights of the selected run, scored on validation -> (table, choice)."""
    run_dir = plan["run_dir"]
    val_set = plan["sets"]["val"].replace("{R}", run_dir)
    gen = f"{best}={_gen(cfg.val_dir, best, 'val')}"
    gens = [gen]
    if _gen(cfg.val_dir, best, "val", "modality").exists():  # the same model decoded with the per-modality mask
        gens.append(f"{best}{MASK_LABEL}={_gen(cfg.val_dir, best, 'val', 'modality')}")
    relevance = _relevance(cfg)
    artists = _names_artists(run_dir)
    rows, tuned = {}, {}
    for group in RANKING_GROUPS:  # weights are tuned per group, on the group's first ranking
        out = f"{cfg.work_dir}/choose" + ("" if group == RANKING_GROUPS[0] else f"/{group[0]}")
        result = run(T2MRConfig(run_dir=run_dir, playlists=val_set, out_dir=out, generations=[gen], unimodal=False,
                                rankings=[group[0]], tune_weights=True, baselines=["none"], diagnostics=False))
        weights_file = f"{out}/weights_{best}.json"
        tuned[group[0]] = {"file": weights_file,
                           "objective": result["systems"][f"{best} tuned weights"]["metrics"]["P@10"]}
        options = dict(run_dir=run_dir, playlists=val_set, generations=gens, unimodal=False, baselines=["none"],
                       diagnostics=False, beams_used=BEAMS_SCORED, rankings=list(group), weights=[weights_file],
                       artist_first=artists)
        found = dict(run(T2MRConfig(**options, out_dir=f"{out}/grid", relevance=relevance))["systems"])
        if relevance:
            with_prior = run(T2MRConfig(**options, out_dir=f"{out}/prior", relevance=relevance,
                                        modality_prior=weights_file))
            found.update({k.replace(best, f"{best} relevance x tuned prior", 1): v
                          for k, v in with_prior["systems"].items() if " w/o " not in k and " weights " not in k})
        if group != RANKING_GROUPS[0]:  # the group's default rows (every beam) get a label of their own
            found = {k if "[" in k else f"{k} [{group[0]}, {v['beams']} beams]": v for k, v in found.items()}
        rows.update(found)
    order = sorted(rows, key=lambda k: -rows[k]["metrics"]["P@10"])
    chosen = order[0]
    lines = ["| variant (run " + best + ") | P@1 | P@5 | P@10 | Hit@10 |", "|---|---|---|---|---|"]
    for k in order:
        m = rows[k]["metrics"]
        lines.append(f"| {k}{' (chosen)' if k == chosen else ''} | {_p(m['P@1'])} | {_p(m['P@5'])} | "
                     f"{_p(m['P@10'])} | {_p(m['Hit@10'])} |")
    system = rows[chosen]
    group = next(g[0] for g in RANKING_GROUPS if system["ranking"] in g)
    weights_file = tuned[group]["file"]
    choice = {"label": chosen, "ranking": system["ranking"], "beams": system["beams"],
              "artist_first": system.get("artist_first", False),
              "mode": "modality" if MASK_LABEL in chosen else "catalog",
              "weights": ("relevance x tuned prior" if "relevance x tuned prior" in chosen else
                          "tuned" if " weights " in chosen else "equal" if " w/o " in chosen else "relevance"),
              "tuned_weights": json.loads(Path(weights_file).read_text())["weights"],
              "tuned_objective": tuned[group]["objective"], "weights_file": weights_file, "relevance": relevance}
    return "\n".join(lines), choice


def choose_setting_folds(cfg: T2MRReportConfig, plan: dict, best: str) -> tuple[str, dict]:
    """Ranking and beams of the selected run with equal weights, P@10 pooled over the validation folds
    -> (table, choice)."""
    paths, kinds = [], {}
    for i, spec in enumerate(cfg.val_folds):
        run_dir, _, out_dir = spec.partition("=")
        artists = _names_artists(run_dir)
        gen = _gen(out_dir, best, "val")
        if not out_dir or not gen.exists():
            raise SystemExit(f"--val_folds {spec!r}: no generations of {best} at {gen} (RUN_DIR=OUT_DIR expected)")
        result = run(T2MRConfig(run_dir=run_dir, playlists=plan["sets"]["val"].replace("{R}", run_dir),
                                out_dir=f"{cfg.work_dir}/choose_folds/{i}", generations=[f"{best}={gen}"],
                                unimodal=False, rankings=list(FOLD_RANKINGS), beams_used=BEAMS_SCORED,
                                baselines=["bm25"], diagnostics=False, artist_first=artists))
        kinds.update({k: (v["ranking"], v["beams"], v.get("artist_first", False))
                      for k, v in result["systems"].items() if "ranking" in v})
        paths.append(f"{cfg.work_dir}/choose_folds/{i}/t2mr.json")
    pooled = pool(paths)
    rows = {k: v for k, v in pooled.items() if k in kinds}
    chosen = max(rows, key=lambda k: rows[k]["P@10"])
    key = "P@10 - BM25 95% CI"
    lines = [f"| variant (run {best}, equal weights) | ranking | beams | artist first | requests | P@10 pooled | "
             "P@10 - BM25, paired |", "|---|---|---|---|---|---|---|"]
    for k in sorted(rows, key=lambda k: -rows[k]["P@10"]):
        lines.append(f"| {k}{' (chosen)' if k == chosen else ''} | {kinds[k][0]} | {kinds[k][1]} | "
                     f"{'yes' if kinds[k][2] else 'no'} | "
                     f"{rows[k]['requests']} | {_p(rows[k]['P@10'])} | {fmt_interval(rows[k].get(key))} |")
    lines.append(f"| BM25 | | | | {pooled['BM25']['requests']} | {_p(pooled['BM25']['P@10'])} | |")
    relevance = _relevance(cfg)
    ranking, beams, led = kinds[chosen]
    return "\n".join(lines), {"label": chosen, "ranking": ranking, "beams": beams, "artist_first": led,
                              "mode": "catalog", "weights": "equal", "relevance": relevance, "folds": cfg.val_folds}


def final(cfg: T2MRReportConfig, plan: dict, choice: dict) -> tuple[str, dict]:
    run_dir = plan["run_dir"]
    mode = choice.get("mode", "catalog")
    names = [r["name"] for r in plan["runs"] if _gen(cfg.eval_dir, r["name"], "eval", mode).exists()]
    opts = dict(run_dir=run_dir, num_beams=16, k=10, rankings=[choice["ranking"]], beams_used=[choice["beams"]],
                artist_first=choice.get("artist_first", False))
    if choice["weights"] in ("tuned",):
        opts["weights"] = [choice["weights_file"]]
    if choice["relevance"]:  # modality selection by the relevance model: a row of its own, whatever was chosen
        opts["relevance"] = choice["relevance"]
        if choice["weights"] == "relevance x tuned prior":
            opts["modality_prior"] = choice["weights_file"]
    result = run(T2MRConfig(**opts, playlists=plan["sets"]["eval"].replace("{R}", run_dir),
                            out_dir=f"{cfg.work_dir}/eval", baselines=cfg.baselines,
                            generations=[f"{n}={_gen(cfg.eval_dir, n, 'eval', mode)}" for n in names]))
    seen = run(T2MRConfig(**opts, playlists=plan["sets"]["seen"].replace("{R}", run_dir),
                          out_dir=f"{cfg.work_dir}/eval_seen", baselines=["bm25"], unimodal=False,
                          diagnostics=False, generations=[f"{n}={_gen(cfg.eval_dir, n, 'seen', mode)}" for n in names
                                                          if _gen(cfg.eval_dir, n, "seen", mode).exists()]))
    lines = ["| system | P@1 | P@5 | P@10 | R@10 | Hit@10 | nDCG@10 | P@10 unseen requests | P@10 seen requests | "
             "P@10 on training playlists |", "|" + "---|" * 10]
    for k, sys_ in result["systems"].items():
        m = sys_["metrics"]
        lines.append(f"| {k} | {_p(m['P@1'])} | {_p(m['P@5'])} | {_p(m['P@10'])} | {_p(m['R@10'])} | "
                     f"{_p(m['Hit@10'])} | {_p(m['nDCG@10'])} | {_p(sys_.get('P@10 unseen'))} | "
                     f"{_p(sys_.get('P@10 seen'))} | {_p(seen['systems'].get(k, {}).get('metrics', {}).get('P@10'))} |")
    return "\n".join(lines), {"eval": result, "seen": seen}


def margin_sentence(selection: dict) -> str:
    """' The winner leads the runner-up by ... (paired 95% interval ...)' from selection.json, or '' (older files)."""
    m = selection.get("margin")
    if not m:
        return ""
    lo, hi = m["ci95"]
    return (f" It leads the runner-up, `{m['runner_up']}`, by {m['difference']:+.4f} P@10 over {m['requests']} "
            f"requests (paired 95% interval [{lo:+.4f}, {hi:+.4f}]).")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(T2MRReportConfig, argv)
    val_plan = yaml.safe_load(Path(cfg.val_plan).read_text())
    eval_plan = yaml.safe_load(Path(cfg.eval_plan).read_text())
    selection = json.loads((Path(cfg.eval_dir) / "selection.json").read_text())
    ablation, val = validation(cfg, val_plan)
    choose = choose_setting_folds if cfg.val_folds else choose_setting
    levers, choice = choose(cfg, val_plan, selection["best"])
    if not cfg.final:
        print(f"{ablation}\n\n{levers}\n\n{json.dumps(choice)}")
        return
    table, result = final(cfg, eval_plan, choice)
    diag = result["eval"]["diagnostics"]
    ceilings = "\n".join(
        f"- {n}: random member {_p(d['ceiling_random_member_P@10'])}, expected over members "
        f"{_p(d['ceiling_expected_member_P@10'])}, best member {_p(d['ceiling_best_member_P@10'])}; distinct top-beam "
        f"tracks {d['distinct_top_beam_tracks']} of {d['requests']}; top beam has the playlist's most common level-1 "
        f"code: " + ", ".join(f"{m} {_p(a['share'])}" for m, a in d["level1_agreement"].items())
        for n, d in diag.items())
    report = {"selection": selection, "choice": choice}
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.work_dir) / "choice.json").write_text(json.dumps(report, indent=1))
    folds = fold_table(selection)
    text = (f"## Validation ablation (SFT levers)\n\n{ablation}\n\nSelected by bench.t2mr_experiments: "
            f"`{selection['best']}` (validation score per run: "
            + ", ".join(f"{k} {v:.4f}" for k, v in selection["scores"].items()) + ")." + margin_sentence(selection)
            + (f"\n\nPer validation fold:\n\n{folds}" if folds else "")
            + f"\n\n## Decoding, ranking and modality weights (validation)\n\n{levers}\n\n"
            f"## Evaluation playlists (reported once)\n\nThe setting chosen on validation: "
            f"{choice['ranking']} ranking, {choice['beams']} beams, {choice['weights']} weights "
            f"({choice['label']}).\n\n{table}\n\n"
            f"Retrieval ceilings and diagnostics:\n\n{ceilings}\n")
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
