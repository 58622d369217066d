"""Run a plan of SFT experiments on one GPU and save each bundle's generations for offline T2MR scoring.

    python -m bench.t2mr_experiments --plan recipes/SmolLM2-135M-Instruct/t2mr/val_ablation.yaml --out_dir runs/t2mr_val
    python -m bench.t2mr_experiments --plan recipes/SmolLM2-135M-Instruct/t2mr/eval_final.yaml --out_dir runs/t2mr_eval

A plan (YAML) gives shared recipe options (`defaults`), the request sets to generate for (`sets`: name -> playlists
JSONL) and the runs (`runs`: name, run_dir, tokenizer, args). `{R}` in an option is the run's run_dir and `{T}` its
tokenizer. Each run trains with recipes/sft_3mtoken.py, generates `num_beams` beams for every request of every set
(`music3m-t2mr --save_generations`) and deletes the model unless `keep_models`. `generate.modes` names the decoding
masks: a list (every set) or a mapping mode -> sets; mode `catalog` writes OUT/NAME/t2mr_SET, any other mode
OUT/NAME/t2mr_SET_MODE. A plan with `select` first scores the runs of an earlier (validation) plan and lets runs with
`inherit: best` start from the best run's options, so settings are chosen on the validation split only; the choice
is written to OUT_DIR/selection.json (with the winner's margin over the runner-up and its paired bootstrap interval
over the validation requests) and reused when the plan runs again. Score the saved generations on any machine
with `music3m-t2mr --generations NAME=OUT_DIR/NAME/t2mr_SET/generations_NAME.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from common.config import parse_config
from eval.metrics import bootstrap_ci

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sft_3mtoken.py"


@dataclass
class ExperimentArguments:
    """Train and generate for every run of a T2MR experiment plan."""

    plan: str = field(metadata={"help": "experiment plan YAML (defaults, sets, runs, optional select)"})
    out_dir: str = field(metadata={"help": "one folder per run: log, generations, scores"})
    parallel: int = field(default=4, metadata={"help": "runs trained at the same time on the GPU"})
    runs: list[str] = field(default_factory=list, metadata={"help": "only these runs of the plan (default all)"})
    run_dir: str | None = field(default=None, metadata={
        "help": "the plan's run_dir instead of its own (the same plan on another validation fold)"})
    sets: list[str] = field(default_factory=list, metadata={
        "help": "only these request sets of the plan (default all)"})
    modes: list[str] = field(default_factory=list, metadata={
        "help": "only these decoding masks of the plan's generate.modes (default all), e.g. catalog"})
    device: str = field(default="cuda", metadata={"help": "device for generation"})
    num_beams: int | None = field(default=None, metadata={
        "help": "beams saved per request instead of the plan's generate.num_beams"})
    keep_models: bool = field(default=False, metadata={"help": "keep each run's model after its generations"})
    dry_run: bool = field(default=False, metadata={"help": "print the commands only"})
    select_from: str | None = field(default=None, metadata={
        "help": "score the validation runs in this folder instead of the plan's select.from (e.g. a folder of "
                "symbolic links to the runs of several rounds); the choice is made again"})
    select_only: bool = field(default=False, metadata={
        "help": "make the plan's selection again, write OUT_DIR/selection.json and stop (no training)"})


def _fill(value, run: dict):
    if isinstance(value, str):
        return value.replace("{R}", run["run_dir"]).replace("{T}", run.get("tokenizer", "rqvae"))
    if isinstance(value, list):
        return [_fill(v, run) for v in value]
    return value


def run_options(plan: dict, run: dict) -> dict:
    """The recipe options of a run: plan defaults, then the run's own args, placeholders filled."""
    run = {"run_dir": plan.get("run_dir", ""), **run}
    return {k: _fill(v, run) for k, v in {**plan.get("defaults", {}), **run.get("args", {})}.items()}


def _flags(options: dict) -> list[str]:
    out = []
    for k, v in options.items():
        out.append(f"--{k}")
        out += [str(x) for x in v] if isinstance(v, list) else [str(v).lower() if isinstance(v, bool) else str(v)]
    return out


def commands(plan: dict, run: dict, out: Path, device: str) -> list[list[str]]:
    """The recipe command and one generation command per request set of a run."""
    options = {**run_options(plan, run), "output_dir": str(out / "model")}
    config = options.pop("config")
    py = sys.executable
    cmds = [[py, str(RECIPE), "--config", config, *_flags(options)]]
    gen = plan.get("generate", {})
    run_dir = run.get("run_dir", plan.get("run_dir"))
    for mode, set_name in generation_targets(plan):
        playlists = plan["sets"][set_name]
        cmds.append([py, "-m", "eval.t2mr", "--run_dir", run_dir, "--playlists", _fill(playlists, {"run_dir": run_dir}),
                     "--bundles", f"{run['name']}={out / 'model'}", "--baselines", "none", "--unimodal", "false",
                     "--device", device, "--num_beams", str(gen.get("num_beams", 16)), "--mode", mode,
                     "--batch_size", str(gen.get("batch_size", 16)), "--save_generations", "true",
                     "--rankings", "match", "beams", "--out_dir", str(out / set_dir(set_name, mode))])
    return cmds


def generation_targets(plan: dict) -> list[tuple[str, str]]:
    """(decoding mode, set name) pairs to generate: `generate.modes` as a list (every set) or mode -> sets."""
    modes = plan.get("generate", {}).get("modes", ["catalog"])
    if isinstance(modes, dict):
        pairs = [(m, s) for m, sets in modes.items() for s in sets]
    else:
        pairs = [(m, s) for m in modes for s in plan["sets"]]
    unknown = sorted({s for _, s in pairs} - set(plan["sets"]))
    if unknown:
        raise ValueError(f"generate.modes names sets that the plan does not have: {unknown}")
    return pairs


def restrict(plan: dict, sets: list[str], modes: list[str], num_beams: int | None = None) -> None:
    """Keep only these request sets and decoding masks of the plan (empty: keep all), in place; num_beams replaces
    the plan's beams per request."""
    gen = plan.setdefault("generate", {})
    if num_beams:
        gen["num_beams"] = num_beams
    targets = generation_targets(plan)
    if modes:
        unknown = sorted(set(modes) - {m for m, _ in targets})
        if unknown:
            raise ValueError(f"--modes names masks that the plan does not generate: {unknown}")
    if sets:
        plan["sets"] = {k: v for k, v in plan["sets"].items() if k in sets}
    kept: dict[str, list[str]] = {}
    for m, s in targets:
        if (not modes or m in modes) and s in plan["sets"]:
            kept.setdefault(m, []).append(s)
    gen["modes"] = kept


def set_dir(set_name: str, mode: str = "catalog") -> str:
    """Folder of a set's generations inside a run's folder."""
    return f"t2mr_{set_name}" if mode == "catalog" else f"t2mr_{set_name}_{mode}"


def run_env(parallel: int) -> dict[str, str]:
    """The environment of a run's commands: unbuffered output, and, unless OMP_NUM_THREADS is set, CPU threads capped
    at cores / runs side by side (ten runs with torch's default thread count each stalled 32 cores for 8 min before
    any reached the GPU, docs/t2mr.md round 11)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in env and parallel > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run_one(plan: dict, run: dict, args: ExperimentArguments) -> dict:
    out = Path(args.out_dir) / run["name"]
    out.mkdir(parents=True, exist_ok=True)
    done = out / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    t0, times = time.time(), {}
    with open(out / "log.txt", "a") as log:
        for i, cmd in enumerate(commands(plan, run, out, args.device)):
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            if args.dry_run:
                print(" ".join(cmd))
                continue
            start = time.time()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env(args.parallel))
            times["sft_seconds" if i == 0 else f"generate_{i}_seconds"] = round(time.time() - start, 1)
            if proc.returncode != 0:
                return {"name": run["name"], "failed": " ".join(cmd[:4]), "returncode": proc.returncode, **times}
    result = {"name": run["name"], "seconds": round(time.time() - t0, 1), **times,
              "options": run_options(plan, run)}
    if not args.dry_run:
        state = out / "model" / "trainer_state.json"
        if state.exists():
            logs = json.loads(state.read_text()).get("log_history", [])
            result["loss"] = [(x["step"], round(x["loss"], 4)) for x in logs if "loss" in x]
        if not args.keep_models:
            shutil.rmtree(out / "model", ignore_errors=True)
        done.write_text(json.dumps(result, indent=1))
    return result


def selection_variant(t2mr: dict) -> tuple[float, list[float]]:
    """The validation criterion: the best P@10 on unseen requests over the scored variants (rankings x beams: 4, 16
    and every beam saved) of a music3m-t2mr result (its t2mr.json), and the per-request P@10 of the variant that gives
    it (unseen requests only, where the result marks seen ones; the first such variant on ties)."""
    best = None
    for s in t2mr["systems"].values():
        unseen = s.get("P@10 unseen") is not None
        value = s["P@10 unseen"] if unseen else s["metrics"]["P@10"]
        if best is None or value > best[0]:
            per_request = s.get("P@10 per request") or []
            if unseen and s.get("seen") is not None:
                per_request = [p for p, seen in zip(per_request, s["seen"]) if not seen]
            best = (value, per_request)
    return best


def select_best(select: dict) -> dict:
    """Score every finished run of the validation plan on its set -> the best run's name, options and scores.

    `select.folds` (optional): more validation folds, each {run_dir, from}, where the same plan ran
    (`--run_dir FOLD_RUN --out_dir FROM`); a run's score is then the request-weighted mean over the folds that have
    it. Only runs scored on as many folds as the best-covered run can be chosen (means over other folds do not
    compare: the folds differ in difficulty, docs/t2mr.md round 11), and never a run marked `select: false` (a seed
    replicate); the others are scored and listed under `not_eligible` with the reason."""
    val_plan = yaml.safe_load(Path(select["plan"]).read_text())
    folds = [{"run_dir": val_plan.get("run_dir"), "from": select["from"]}, *select.get("folds", [])]
    fold_scores = []  # what each fold gave each run: the table behind the pooled scores (selection.json)
    per_fold: list[dict[str, list[float]]] = []  # fold -> run -> per-request P@10 of its selection variant
    for fold in folds:
        got = _fold_scores(val_plan, select["set"], fold)
        fold_scores.append({"from": fold["from"], "scores": {n: v for n, (v, _, _) in got.items()},
                            "requests": {n: r for n, (_, r, _) in got.items()}})
        per_fold.append({n: p for n, (_, _, p) in got.items()})
    requests: dict[str, int] = {}
    for f in fold_scores:
        for n, r in f["requests"].items():
            requests[n] = requests.get(n, 0) + r
    scores = {n: sum(f["scores"][n] * f["requests"][n] for f in fold_scores if n in f["scores"]) / requests[n]
              for n in requests}
    if not scores:
        raise RuntimeError(f"select: no finished run in {[f['from'] for f in folds]}")
    covered = {n: sum(n in f["scores"] for f in fold_scores) for n in scores}
    replicate = {r["name"] for r in val_plan["runs"] if r.get("select", True) is False}
    most = max((covered[n] for n in scores if n not in replicate), default=0)
    not_eligible = {n: "select: false" if n in replicate else f"scored on {covered[n]} of the {most} folds"
                    for n in scores if n in replicate or covered[n] < most}
    eligible = [n for n in scores if n not in not_eligible]
    if not eligible:
        raise RuntimeError(f"select: no finished run can be chosen ({not_eligible})")
    order = sorted(eligible, key=lambda n: (-scores[n], list(scores).index(n)))  # ties: the earlier (simpler) run
    best = order[0]
    run = next(r for r in val_plan["runs"] if r["name"] == best)
    chosen = {"best": best, "args": run.get("args", {}), "scores": scores,
              "requests": requests, "folds": fold_scores, "not_eligible": not_eligible}
    if len(order) > 1:
        chosen["margin"] = selection_margin(per_fold, best, order[1])
    return chosen


def fold_table(selection: dict) -> str:
    """The selection score of each run on each validation fold, then pooled (request-weighted), from selection.json;
    '' for one fold or an older file."""
    folds = [f for f in selection.get("folds", []) if f["scores"]]
    if len(folds) < 2:
        return ""
    runs = list(selection["scores"])
    lines = ["| validation fold (its runs' folder) | requests | " + " | ".join(f"`{r}`" for r in runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    for f in folds:
        requests = max(f["requests"].values())
        lines.append(f"| {f['from']} | {requests} | "
                     + " | ".join(fmt_score(f["scores"].get(r)) for r in runs) + " |")
    pooled = [fmt_score(selection["scores"][r]) for r in runs]
    pooled = [f"**{p}**" if r == selection["best"] else p for r, p in zip(runs, pooled)]
    lines.append(f"| pooled | {max(selection['requests'].values())} | " + " | ".join(pooled) + " |")
    not_eligible = selection.get("not_eligible") or {}
    if not_eligible:
        lines.append("\nNot eligible: " + "; ".join(f"`{n}` ({why})" for n, why in not_eligible.items()) + ".")
    return "\n".join(lines)


def fmt_score(x: float | None) -> str:
    """A P@10 in the tables: four decimals, '-' where missing."""
    return "-" if x is None else f"{x:.4f}"


def selection_margin(per_fold: list[dict[str, list[float]]], best: str, runner_up: str) -> dict:
    """How sure the choice is: the winner's P@10 minus the runner-up's over the requests both were scored on (the
    folds that have both), with a paired bootstrap interval."""
    a: list[float] = []
    b: list[float] = []
    for runs in per_fold:
        if best in runs and runner_up in runs and len(runs[best]) == len(runs[runner_up]):
            a += runs[best]
            b += runs[runner_up]
    diff = float(np.mean(np.subtract(a, b))) if a else float("nan")
    lo, hi = bootstrap_ci(np.asarray(a), np.asarray(b))
    return {"runner_up": runner_up, "difference": diff, "ci95": [lo, hi], "requests": len(a)}


def _fold_scores(val_plan: dict, set_name: str, fold: dict) -> dict[str, tuple[float, int, list[float]]]:
    """run name -> (selection score, requests, per-request P@10 of the scoring variant) on one validation fold."""
    scores = {}
    for run in val_plan["runs"]:
        gen = Path(fold["from"]) / run["name"] / set_dir(set_name) / f"generations_{run['name']}.json"
        if not gen.exists():
            continue
        run_dir = run.get("run_dir", fold["run_dir"])
        out = gen.parent / "selection"
        subprocess.run([sys.executable, "-m", "eval.t2mr", "--run_dir", run_dir, "--playlists",
                        _fill(val_plan["sets"][set_name], {"run_dir": run_dir}),
                        "--generations", f"{run['name']}={gen}", "--baselines", "none", "--unimodal", "false",
                        "--diagnostics", "false", "--rankings", "match", "beams", "--beams_used", "4", "16",
                        "--out_dir", str(out)], check=True, stdout=subprocess.DEVNULL)
        doc = json.loads((out / "t2mr.json").read_text())
        value, per_request = selection_variant(doc)
        scores[run["name"]] = (value, int(doc["queries"]["queries"]), per_request)
    return scores


def main(argv: list[str] | None = None) -> None:
    args = parse_config(ExperimentArguments, argv)
    plan = yaml.safe_load(Path(args.plan).read_text())
    if args.run_dir:
        plan["run_dir"] = args.run_dir
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    if (args.select_only or args.select_from) and not plan.get("select"):
        raise SystemExit(f"{args.plan}: --select_only / --select_from need a plan with `select`")
    if plan.get("select"):
        saved = Path(args.out_dir) / "selection.json"
        if args.select_from:
            plan["select"]["from"] = args.select_from
        again = args.select_only or args.select_from or not saved.exists()
        chosen = select_best(plan["select"]) if again else json.loads(saved.read_text())
        saved.write_text(json.dumps(chosen, indent=1))
        print(json.dumps(chosen), flush=True)
        if args.select_only:
            print(fold_table(chosen))
            return
        plan["runs"] = [{**r, "args": {**chosen["args"], **r.get("args", {})}} if r.get("inherit") == "best" else r
                        for r in plan["runs"]]
    runs = [r for r in plan["runs"] if not args.runs or r["name"] in args.runs]
    restrict(plan, args.sets, args.modes, args.num_beams)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for result in pool.map(lambda r: run_one(plan, r, args), runs):
            print(json.dumps({k: v for k, v in result.items() if k != "loss"}), flush=True)


if __name__ == "__main__":
    main()
