#!/usr/bin/env bash
# The Spotify Songs T2MR benchmark on one GPU: for each tokenizer, SFT of SmolLM2-135M-Instruct on the same D_qt
# (recipes/SmolLM2-135M-Instruct/sft/config_spotify.yaml), then T2MR of the bundle on the evaluation playlists
# (eval.t2mr). The text baselines and the final table run on any machine:
#   python -m eval.t2mr ... --baselines bm25 dense artist_track_name --merge $OUT_DIR/*/t2mr.json
# Inputs come from `python -m bench.spotify_tokenizers` (catalog, split, tokenizers) and `python -m data_gen.synth.dqt`.
# Usage: recipes/spotify_t2mr.sh [extra recipe arguments, e.g. --model_name_or_path DIR --gguf_file FILE]
set -euo pipefail
RUN=${RUN:-runs/spotify_bench}
TOKENIZERS=${TOKENIZERS:-$RUN/tokenizers}
DQT=${DQT:-$RUN/dqt/dqt.parquet}
SFT=${SFT:-$RUN/sft}
OUT_DIR=${OUT_DIR:-$RUN/t2mr}
RELEVANCE=${RELEVANCE:-runs/spotify_llm/relevance}        # a model dir or relevance_scores.json
METHODS=${METHODS:-"rqvae:3MTokenRec kmeans:KmeansRec fusid:FusIDRec rqkmeans:RQKMeansRec musicrec:MusicRecRec"}
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/single_gpu.yaml}
rel_args=()
if [ -e "$RELEVANCE" ]; then rel_args=(--relevance "$RELEVANCE"); else echo "no relevance model at $RELEVANCE: equal weights only"; fi
for pair in $METHODS; do
  method=${pair%%:*}; name=${pair#*:}
  start=$(date +%s)
  $PYTHON -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" recipes/sft_3mtoken.py \
    --config recipes/SmolLM2-135M-Instruct/sft/config_spotify.yaml --token_db_dir "$TOKENIZERS/$method" \
    --dqt_path "$DQT" --output_dir "$SFT/$method" "$@"
  unimodal=false; [ "$method" = rqvae ] && unimodal=true
  $PYTHON -m eval.t2mr --run_dir "$RUN" --playlists "$RUN/splits/playlists_eval.jsonl" --bundles "$name=$SFT/$method" \
    "${rel_args[@]}" --baselines none --unimodal $unimodal --device "$DEVICE" --out_dir "$OUT_DIR/$method"
  echo "$method: SFT + T2MR in $(( $(date +%s) - start )) s"
done
