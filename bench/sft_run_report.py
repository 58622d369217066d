"""SFT run directory (trainer_state.json, train_results.json, music3m/bundle.json) -> a markdown row of throughput.

    python bench/sft_run_report.py --output_dir OUTPUT_DIR --gpus 2 --label "ZeRO-3, 2 x H200"

Non-padding tokens = optimizer steps x per-device batch x GPUs x the mean tokenized length of the training
examples (no padding counted). train_runtime includes the first steps' warm-up and compilation, so tokens/s per
GPU here is a lower bound on the steady-state rate.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config


@dataclass
class SFTRunReportConfig:
    """SFT run directory -> a markdown row of throughput (non-padding tokens/s per GPU)."""

    output_dir: str = field(metadata={"help": "the SFT run's output directory (trainer_state.json, music3m/)"})
    gpus: int = field(metadata={"help": "GPUs the run trained on"})
    label: str = field(default="", metadata={"help": "the row's label"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(SFTRunReportConfig, argv)
    out = Path(cfg.output_dir)
    state = json.loads((out / "trainer_state.json").read_text())
    results = json.loads((out / "train_results.json").read_text())
    bundle = json.loads((out / "music3m" / "bundle.json").read_text())
    batch = state["train_batch_size"]
    mean_len = bundle["sft_counts"]["mean_train_tokens"]
    tokens = state["global_step"] * batch * cfg.gpus * mean_len
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    runtime = results["train_runtime"]
    print("| run | steps | batch/GPU | mean tokens/example | loss first -> last | runtime s | tokens/s per GPU |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {cfg.label} | {state['global_step']} | {batch} | {mean_len:.1f} | {losses[0]:.3f} -> {losses[-1]:.3f} | "
          f"{runtime:.1f} | {tokens / runtime / cfg.gpus:,.0f} |")


if __name__ == "__main__":
    main()
