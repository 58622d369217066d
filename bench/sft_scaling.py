"""SFT scaling over the GPUs of one machine: bench/sft_throughput.py on 1 GPU, then on all GPUs with DDP, DeepSpeed
ZeRO-2 and ZeRO-3 (accelerate_configs/), the same rows and per-GPU batch -> one table of tokens/s per GPU and the
scaling efficiency (tokens/s per GPU on N GPUs / on 1 GPU, same row).

    python -m bench.sft_scaling --token_db_dir TOKEN_DB_DIR --dqt_path DQT_PATH --out_dir OUT_DIR \
        [--rows stock128,fast128_compile] [--steps 40] [--warmup 10] [--configs ddp zero2 zero3]

Run from the repository root (the recipe YAML, accelerate_configs/ and bench/sft_throughput.py are found from there).
Writes OUT_DIR/gpu1.json and OUT_DIR/CONFIG.json (sft_throughput's JSON per launch); a launch that fails is reported
and its rows show as failed in the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.config import parse_config

THROUGHPUT = "bench/sft_throughput.py"


@dataclass
class SFTScalingConfig:
    """SFT throughput on 1 GPU vs all GPUs with DDP, ZeRO-2 and ZeRO-3 -> tokens/s per GPU and scaling efficiency."""

    token_db_dir: str = field(metadata={"help": "tokenizer directory with token_db.parquet (tokenizer_ext.train)"})
    dqt_path: str = field(metadata={"help": "D_qt queries (data_gen.synth.dqt output)"})
    out_dir: str = field(metadata={"help": "where gpu1.json and one CONFIG.json per accelerate config go"})
    recipe_config: str = field(default="recipes/Qwen2.5-1.5B-Instruct/sft/config_random_init.yaml", metadata={
        "help": "the recipe YAML every launch trains (sft_throughput's --config)"})
    rows: str = field(default="stock128,fast128_compile", metadata={
        "help": "comma-separated rows of bench/sft_throughput.py"})
    steps: int = field(default=40, metadata={"help": "optimizer steps per row"})
    warmup: int = field(default=10, metadata={"help": "steps before the clock starts"})
    configs: list[str] = field(default_factory=lambda: ["ddp", "zero2", "zero3"], metadata={
        "help": "multi-GPU setups, each NAME the accelerate config ACCELERATE_CONFIG_DIR/NAME.yaml"})
    accelerate_config_dir: str = field(default="accelerate_configs", metadata={
        "help": "directory of the accelerate configs"})
    gpus: int = field(default=0, metadata={
        "help": "processes per multi-GPU launch (0: torch.cuda.device_count(), asked of --python)"})
    python: str = field(default="", metadata={"help": "interpreter of the launches (empty: this one)"})


def gpu_count(python: str) -> int:
    out = subprocess.run([python, "-c", "import torch; print(torch.cuda.device_count())"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return int(out.strip().splitlines()[-1])


def print_table(out: Path, configs: list[str]) -> None:
    """gpu1.json + CONFIG.json per config -> the scaling table (a config without JSON or row: failed)."""
    one = {r["key"]: r for r in json.loads((out / "gpu1.json").read_text())["rows"]}
    print("\n### SFT scaling (tokens/s per GPU; efficiency = per GPU on N GPUs / on 1 GPU, same row)\n")
    print("| row | setup | GPUs | non-padding tokens/s per GPU | efficiency | loss step 1 -> last |")
    print("|---|---|---|---|---|---|")
    for key, r in one.items():
        print(f"| {r['label']} | one GPU | 1 | {r['tokens_per_s']:,.0f} | 1.00 | "
              f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} |")
        for cfg in configs:
            path = out / f"{cfg}.json"
            rows = {x["key"]: x for x in json.loads(path.read_text())["rows"]} if path.exists() else {}
            if key not in rows:
                print(f"| {r['label']} | {cfg} | - | failed | - | - |")
                continue
            m = rows[key]
            print(f"| {r['label']} | {cfg} | {m['gpus']} | {m['tokens_per_s']:,.0f} | "
                  f"{m['tokens_per_s'] / r['tokens_per_s']:.2f} | {m['losses'][0]:.3f} -> {m['losses'][-1]:.3f} |")


def one_gpu_env(environ: dict) -> dict:
    """The environment of the one-GPU launch: only the first visible GPU. With several visible, a single process's
    Trainer wraps the model in nn.DataParallel, which the fast path refuses (and which is not the one-GPU row)."""
    first = (environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    return {**environ, "CUDA_VISIBLE_DEVICES": first}


def run(cfg: SFTScalingConfig) -> None:
    python = cfg.python or sys.executable
    ngpu = cfg.gpus or gpu_count(python)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--config", cfg.recipe_config, "--token_db_dir", cfg.token_db_dir, "--dqt_path", cfg.dqt_path,
              "--rows", cfg.rows, "--steps", str(cfg.steps), "--warmup", str(cfg.warmup)]
    one = subprocess.run([python, THROUGHPUT, *common, "--out", str(out / "gpu1.json")], env=one_gpu_env(os.environ))
    if one.returncode:
        print(f"one GPU: {THROUGHPUT} failed (exit {one.returncode})", file=sys.stderr)
        sys.exit(one.returncode)
    for name in cfg.configs:
        proc = subprocess.run([python, "-m", "accelerate.commands.launch", "--config_file",
                               str(Path(cfg.accelerate_config_dir) / f"{name}.yaml"), "--num_processes", str(ngpu),
                               THROUGHPUT, *common, "--out", str(out / f"{name}.json")])
        if proc.returncode:
            print(f"{name}: failed", flush=True)
    print_table(out, cfg.configs)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(SFTScalingConfig, argv))


if __name__ == "__main__":
    main()
