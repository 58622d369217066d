#!/usr/bin/env bash
# SFT scaling over the GPUs of one machine: bench/sft_throughput.py on 1 GPU, then on all GPUs with DDP, DeepSpeed
# ZeRO-2 and ZeRO-3 (accelerate_configs/), the same rows and per-GPU batch -> one table of tokens/s per GPU and the
# scaling efficiency (tokens/s per GPU on N GPUs / on 1 GPU, same row).
#   bench/sft_scaling.sh TOKEN_DB_DIR DQT_PATH OUT_DIR        (env: ROWS, STEPS, WARMUP, CONFIGS, PYTHON)
set -euo pipefail
TOK=$1; DQT=$2; OUT=$3
PYTHON=${PYTHON:-python3}
ROWS=${ROWS:-stock128,fast128_compile}
STEPS=${STEPS:-40}; WARMUP=${WARMUP:-10}
CONFIGS=${CONFIGS:-"ddp zero2 zero3"}
NGPU=$($PYTHON -c "import torch; print(torch.cuda.device_count())")
mkdir -p "$OUT"
common=(--config recipes/Qwen2.5-1.5B-Instruct/sft/config_random_init.yaml --token_db_dir "$TOK" --dqt_path "$DQT"
        --rows "$ROWS" --steps "$STEPS" --warmup "$WARMUP")
$PYTHON bench/sft_throughput.py "${common[@]}" --out "$OUT/gpu1.json"
for cfg in $CONFIGS; do
  $PYTHON -m accelerate.commands.launch --config_file "accelerate_configs/$cfg.yaml" --num_processes "$NGPU" \
    bench/sft_throughput.py "${common[@]}" --out "$OUT/$cfg.json" || echo "$cfg: failed"
done
$PYTHON - "$OUT" $CONFIGS <<'PY'
import json, sys
from pathlib import Path
out, configs = Path(sys.argv[1]), sys.argv[2:]
one = {r["key"]: r for r in json.loads((out / "gpu1.json").read_text())["rows"]}
print("\n### SFT scaling (tokens/s per GPU; efficiency = per GPU on N GPUs / on 1 GPU, same row)\n")
print("| row | setup | GPUs | non-padding tokens/s per GPU | efficiency | loss step 1 -> last |")
print("|---|---|---|---|---|---|")
for key, r in one.items():
    print(f"| {r['label']} | one GPU | 1 | {r['tokens_per_s']:,.0f} | 1.00 | {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} |")
    for cfg in configs:
        path = out / f"{cfg}.json"
        rows = {x["key"]: x for x in json.loads(path.read_text())["rows"]} if path.exists() else {}
        if key not in rows:
            print(f"| {r['label']} | {cfg} | - | failed | - | - |")
            continue
        m = rows[key]
        print(f"| {r['label']} | {cfg} | {m['gpus']} | {m['tokens_per_s']:,.0f} | "
              f"{m['tokens_per_s'] / r['tokens_per_s']:.2f} | {m['losses'][0]:.3f} -> {m['losses'][-1]:.3f} |")
PY
