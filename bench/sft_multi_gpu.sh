#!/usr/bin/env bash
# Qwen2.5-1.5B-shaped SFT (random weights, real Qwen tokenizer vocabulary) with DeepSpeed ZeRO-2 and ZeRO-3 on all
# GPUs of one machine, then reload the saved bundle. Usage: bench/sft_multi_gpu.sh TOKEN_DB_DIR DQT_PATH OUT_DIR
set -euo pipefail
TOK=$1; DQT=$2; OUT=$3
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
for stage in ${STAGES:-zero2 zero3}; do
  python3 -m accelerate.commands.launch --config_file accelerate_configs/$stage.yaml --num_processes "$NGPU" recipes/sft_3mtoken.py \
    --config recipes/Qwen2.5-1.5B-Instruct/sft/config_random_init.yaml \
    --token_db_dir "$TOK" --dqt_path "$DQT" --output_dir "$OUT/$stage" --model_cache_dir "$OUT/cache"
  python3 bench/sft_run_report.py --output_dir "$OUT/$stage" --gpus "$NGPU" --label "$stage, $NGPU GPU(s)"
  python3 - "$OUT/$stage" <<'PY'
import sys, torch
from recipes.sft.bundle import load_bundle
b = load_bundle(sys.argv[1], dtype=torch.bfloat16)
ids = b.tokenizer("<begin_3MToken><BM1-3><end_3MToken>", return_tensors="pt").input_ids
print("reloaded:", type(b.model).__name__, "vocab", b.model.config.vocab_size, "tracks", b.token_db.num_tracks,
      "logits", tuple(b.model(ids).logits.shape))
PY
done
