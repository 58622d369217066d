"""SFT run directory (trainer_state.json + train_results.json) -> one markdown row of throughput numbers.

    python bench/sft_run_report.py OUTPUT_DIR --gpus 2 --label "ZeRO-3, 2 x H200"

Non-padding tokens/s per GPU = num_input_tokens_seen (counted with include_num_input_tokens_seen=non_padding,
summed over processes) / train_runtime / GPUs. train_runtime includes the first steps' warm-up, so this is a
lower bound on the steady-state rate.
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
    tokens = max((h.get("num_input_tokens_seen", 0) for h in state["log_history"]), default=0)
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    runtime = results["train_runtime"]
    print("| run | steps | loss first -> last | non-padding tokens | runtime s | tokens/s per GPU |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.label} | {state['global_step']} | {losses[0]:.3f} -> {losses[-1]:.3f} | {tokens:,} | "
          f"{runtime:.1f} | {tokens / runtime / args.gpus:,.0f} |")


if __name__ == "__main__":
    main()
