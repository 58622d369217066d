"""SFT run directory (trainer_state.json, train_results.json, music3m/bundle.json) -> a markdown row of throughput.

    python bench/sft_run_report.py OUTPUT_DIR --gpus 2 --label "ZeRO-3, 2 x H200"

Non-padding tokens = optimizer steps x per-device batch x GPUs x the mean tokenized length of the training
examples (no padding counted). train_runtime includes the first steps' warm-up and compilation, so tokens/s per
GPU here is a lower bound on the steady-state rate.
"""

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("output_dir")
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    out = Path(args.output_dir)
    state = json.loads((out / "trainer_state.json").read_text())
    results = json.loads((out / "train_results.json").read_text())
    bundle = json.loads((out / "music3m" / "bundle.json").read_text())
    batch = state["train_batch_size"]
    mean_len = bundle["sft_counts"]["mean_train_tokens"]
    tokens = state["global_step"] * batch * args.gpus * mean_len
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    runtime = results["train_runtime"]
    print("| run | steps | batch/GPU | mean tokens/example | loss first -> last | runtime s | tokens/s per GPU |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.label} | {state['global_step']} | {batch} | {mean_len:.1f} | {losses[0]:.3f} -> {losses[-1]:.3f} | "
          f"{runtime:.1f} | {tokens / runtime / args.gpus:,.0f} |")


if __name__ == "__main__":
    main()
