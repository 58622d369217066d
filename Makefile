# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment on first use (and refresh it when a requirements file changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo
SHARED ?= ../shared/data
STAMP  := $(VENV)/.installed
# llama-cpp-python compiles llama.cpp on install, by default for the building CPU's instruction set; a wheel cached by
# pip on one machine can then die of an illegal instruction on an older CPU that shares the cache (the likely cause of
# a CI failure in which every request to the test server failed). It is built once for the x86-64 AVX2 baseline into a
# folder of its own.
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==//p' requirements.txt)
LLAMA_WHEELS ?= $(HOME)/.cache/music3m/wheels/llama-cpp-avx2
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: venv lint test slow_test demo spotify spotify_bench t2mr_data t2mr_gpu t2mr_report t2mr_folds t2mr_gpu_folds bench bench_data bench_gpu clean help

help:
	@echo "make demo       set up, then run the pipeline on the generated demo catalog (into $(RUN))"
	@echo "make test       set up, then run the test suite"
	@echo "make slow_test  also run the slow tests"
	@echo "make lint       ruff (configured in pyproject.toml); make test runs it first"
	@echo "make spotify    ingest + vectorize the Spotify Songs CSV from $(SHARED) into runs/spotify"
	@echo "make spotify_bench  (GPU) the T2MR experiments: validation ablation, final runs, tables (docs/t2mr.md)"
	@echo "make t2mr_folds t2mr_gpu_folds  more T2MR validation folds (CPU data, then GPU runs); see docs/t2mr.md"
	@echo "make bench      CPU speed benchmarks: retrieval at 1.6M tracks, the decoding mask's cost"
	@echo "make bench_gpu  (CUDA) SFT throughput stock TRL vs fast path, nine RQ-VAEs at 1.6M tracks; multi-GPU scaling"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone, so that pip takes the CPU build where the machine provides one
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl > /dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"
	$(BIN)/python -m pip install --quiet --find-links $(LLAMA_WHEELS) -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .

# --durations: the slowest tests in every log (CI included), to keep the suite inside its time
test: venv lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

slow_test: venv
	$(BIN)/python -m pytest -q

DEMO_BUNDLE = $(RUN)/sft/SmolLM2-135M-Instruct-3MTokenRec
DEMO_REQUESTS = "upbeat dance pop for a party" "calm classical piano for studying" "heavy metal for the gym"
demo: venv
	$(BIN)/music3m-ingest --source demo --run_dir $(RUN)
	$(BIN)/music3m-split-playlists --run_dir $(RUN) --eval_fraction 0.2 --seed 0
	$(BIN)/music3m-vectorize --run_dir $(RUN) --tc_exclude_playlists $(RUN)/splits/playlists_eval.txt
	$(BIN)/music3m-train-tokenizer --config recipes/tokenizers/rqvae_demo.yaml --run_dir $(RUN) --out_dir $(RUN)/tokenizers/rqvae
	$(BIN)/music3m-dqt --run_dir $(RUN) --mode template --templates rich --num_queries 2
	$(BIN)/python -m accelerate.commands.launch --config_file accelerate_configs/cpu.yaml recipes/sft_3mtoken.py \
		--config recipes/SmolLM2-135M-Instruct/sft/config_demo.yaml --token_db_dir $(RUN)/tokenizers/rqvae \
		--dqt_path $(RUN)/dqt/dqt.jsonl --catalog_path $(RUN)/catalog.parquet --output_dir $(DEMO_BUNDLE)
	@echo "demo run directory: $(RUN)"
	@echo "  catalog.parquet, playlists.jsonl    ingested demo catalog"
	@echo "  embeddings/                         nine modality embeddings + presence mask"
	@echo "  tokenizers/rqvae/                   RQ-VAE tokenizer, token_db.parquet, vocabulary.txt"
	@echo "  dqt/dqt.jsonl                       D_qt requests (templates; an LLM: music3m-dqt --mode llm)"
	@echo "  sft/SmolLM2-135M-Instruct-3MTokenRec/  fine-tuned model + music3m/ inference bundle + README.md model card"
	@echo "The demo model answers three requests (top 5 tracks each; --mode modality: each modality's codes are"
	@echo "chosen freely and matching ranks the catalog, which a 40-step model needs to tell requests apart):"
	$(BIN)/music3m-recommend --bundle $(DEMO_BUNDLE) --catalog $(RUN)/catalog.parquet --k 5 --mode modality \
		--query $(DEMO_REQUESTS)
	$(BIN)/music3m-t2mr --run_dir $(RUN) --playlists $(RUN)/splits/playlists_eval.jsonl --bundles 3MTokenRec=$(DEMO_BUNDLE) \
		--mode modality --baselines bm25 --unimodal false --diagnostics false --out_dir $(RUN)/t2mr --brief true

spotify: venv
	$(BIN)/python -m data_gen.catalog.ingest --source spotify --input $(SHARED)/spotify_songs/spotify_songs.csv --run_dir runs/spotify
	$(BIN)/python -m data_gen.vectorize.run --run_dir runs/spotify

# The Spotify Songs benchmark end to end (docs/t2mr.md): features and CPU tokenizers, the validation run and request
# files, then (GPU) the RQ-VAE and FusID tokenizers, the validation ablation and the final runs, then the tables.
spotify_bench: t2mr_data t2mr_gpu t2mr_report

# T2MR experiments on Spotify Songs (docs/retrieval.md): the CPU side builds the evaluation run (features, K-means and
# RQ-KMeans tokenizers), the validation run and the request files; the GPU side trains the RQ-VAE (grouped) and FusID
# tokenizers and runs the validation ablation, then the final runs with the settings chosen on validation; the report scores
# the saved generations (any machine).
# RQ-KMeans with a 1,024-code first level in run $$R, where missing: the Spotify recipe's IDs (chosen on validation,
# docs/t2mr.md round 9)
RQKMEANS_CB1024 = test -f $$R/tokenizers/rqkmeans_cb1024/token_db.parquet || $(BIN)/music3m-train-tokenizer \
	--config recipes/tokenizers/rqkmeans.yaml --codebook_sizes 1024 256 256 --run_dir $$R \
	--out_dir $$R/tokenizers/rqkmeans_cb1024
# token database $$D cut to its first $$L levels, into $${D}_l$$L, where missing (docs/t2mr.md round 13)
PREFIX_CUT = test -f $${D}_l$$L/token_db.parquet || $(BIN)/python -m tokenizer_ext.prefix --token_db_dir $$D \
	--levels $$L --out_dir $${D}_l$$L
# its first level alone: the K-means IDs of run $$R (the same 1,024 clusters per modality; docs/t2mr.md round 18)
KMEANS_L1 = D=$$R/tokenizers/rqkmeans_cb1024; L=1; $(PREFIX_CUT)

t2mr_data: venv
	$(BIN)/python -m bench.spotify_tokenizers --csv $(SHARED)/spotify_songs/spotify_songs.csv --run_dir runs/spotify_bench \
		--methods kmeans,rqkmeans
	$(BIN)/python -m bench.t2mr_data --csv $(SHARED)/spotify_songs/spotify_songs.csv
	for R in runs/spotify_val runs/spotify_bench; do $(RQKMEANS_CB1024); done

T2MR_PARALLEL ?= 5
T2MR_FOLDS ?= 1 2 3 4
# the validation plan's runs repeated on every fold (empty: all of them): by default the runs behind the recipe's
# choices (docs/t2mr.md rounds 12, 13 and 17), so that eval_final.yaml's rule over folds 1-4 chooses it again
T2MR_FOLD_RUNS ?= text_album_mention_dz256 text_album_mention_dz256_l1 text_album_mention_dz256_l2 \
	text_album_mention_dz256_l1_4800
# the RQ-VAE with a 256-d latent behind one 512-wide layer: the Spotify recipe's IDs (chosen on validation,
# docs/t2mr.md round 10)
RQVAE_DZ256 = --lr 1e-3 --codebook_sizes 1024 256 256 --d_z 256 --hidden_dims 512
# one-level RQ-VAEs with the same latent (round 14, not chosen): k-means init on every row, dead-code reset (the
# per-modality path: grouped training does not reset dead codes)
RQVAE_VQ = --lr 1e-3 --d_z 256 --hidden_dims 512 --kmeans_init_rows -1 --dead_code_reset true --grouped false
# RQ-VAE $$N with options $$O in run $$R on the GPU (grouped), where missing
RQVAE_GPU = test -f $$R/tokenizers/$$N/token_db.parquet || $(BIN)/music3m-train-tokenizer \
	--config recipes/tokenizers/rqvae.yaml --grouped true --device cuda $$O --run_dir $$R --out_dir $$R/tokenizers/$$N
# the 256-d RQ-VAE's IDs of run $$R cut to their first one and two levels, where missing
PREFIX_IDS = for L in 1 2; do D=$$R/tokenizers/rqvae_cb1024_lr1e3_dz256; $(PREFIX_CUT) || exit 1; done
# more validation folds: disjoint blocks of the seeded order whose block 0 is runs/spotify_val (CPU, then GPU), each
# with its RQ-KMeans 1024/256/256 IDs (CPU)
t2mr_folds: venv
	for F in $(T2MR_FOLDS); do R=runs/spotify_val_f$$F; $(BIN)/python -m bench.t2mr_data \
		--csv $(SHARED)/spotify_songs/spotify_songs.csv --val_run $$R --val_fold $$F || exit 1; \
		$(RQKMEANS_CB1024) || exit 1; $(KMEANS_L1) || exit 1; done

# the folds' RQ-VAE tokenizers (the paper's, and the 256-d latent) one after the other, each reusing fold 0's
# checkpoints of the modalities whose inputs are the same (BM, MC, SC, RI; ST and TC depend on the fold's playlists,
# docs/t2mr.md round 11), then the folds' runs: fold i
# of T2MR_FOLDS on GPU i mod (GPUs), one fold per GPU at a time, its runs side by side (fold F logs to
# runs/t2mr_val_fF.log). Each run's CPU threads are capped at cores / (GPUs x T2MR_PARALLEL): ten runs with torch's
# default thread count stalled 32 cores for 8 min (docs/t2mr.md round 11). The recipe fails when any fold does.
t2mr_gpu_folds: venv
	for F in $(T2MR_FOLDS); do R=runs/spotify_val_f$$F; \
		for V in "rqvae:" "rqvae_cb1024_lr1e3_dz256:$(RQVAE_DZ256)"; do N=$${V%%:*}; O=$${V#*:}; \
			$(RQVAE_GPU) --reuse_from runs/spotify_val/tokenizers/$$N || exit 1; done; $(PREFIX_IDS); done
	G=$$($(BIN)/python -c "import torch; print(max(1, torch.cuda.device_count()))"); \
		T=$$(( $$(nproc) / (G * $(T2MR_PARALLEL)) )); [ $$T -ge 1 ] || T=1; pids=""; \
		for g in $$(seq 0 $$((G - 1))); do ( i=0; for F in $(T2MR_FOLDS); do \
			if [ $$((i % G)) -eq $$g ]; then CUDA_VISIBLE_DEVICES=$$g OMP_NUM_THREADS=$$T $(BIN)/python -m bench.t2mr_experiments \
				--plan recipes/SmolLM2-135M-Instruct/t2mr/val_ablation.yaml --run_dir runs/spotify_val_f$$F \
				--out_dir runs/t2mr_val_f$$F --parallel $(T2MR_PARALLEL) $(if $(T2MR_FOLD_RUNS),--runs $(T2MR_FOLD_RUNS),) \
				> runs/t2mr_val_f$$F.log 2>&1 || exit 1; fi; i=$$((i + 1)); done ) & pids="$$pids $$!"; done; \
		for p in $$pids; do wait $$p || exit 1; done
t2mr_gpu: venv
	# RQ-VAE tokenizers NAME:OPTIONS, where missing: the paper's; at lr 1e-3 (on 28k tracks the paper's 150 epochs at
	# 1e-4 are 6,600 steps, docs/t2mr.md round 5); at lr 1e-3 with a 1,024-code first level, which keeps more of an
	# artist's tracks together (round 6); the same for 600 epochs (round 7); the same with a 256-d latent behind one
	# 512-wide layer (round 9); one-level RQ-VAEs with 1,024 and 2,048 codes (round 14)
	for V in "rqvae:" "rqvae_lr1e3:--lr 1e-3" "rqvae_cb1024_lr1e3:--lr 1e-3 --codebook_sizes 1024 256 256" \
		"rqvae_cb1024_lr1e3_ep600:--lr 1e-3 --codebook_sizes 1024 256 256 --epochs 600" \
		"rqvae_cb1024_lr1e3_dz256:$(RQVAE_DZ256)" "rqvae_vq1k_dz256:$(RQVAE_VQ) --codebook_sizes 1024" \
		"rqvae_vq2k_dz256:$(RQVAE_VQ) --codebook_sizes 2048"; do \
		N=$${V%%:*}; O=$${V#*:}; for R in runs/spotify_val runs/spotify_bench; do $(RQVAE_GPU); done; done
	for R in runs/spotify_val runs/spotify_bench; do $(PREFIX_IDS); done
	test -f runs/spotify_bench/tokenizers/fusid/token_db.parquet || $(BIN)/music3m-train-tokenizer \
		--config recipes/tokenizers/fusid.yaml --device cuda --run_dir runs/spotify_bench --out_dir runs/spotify_bench/tokenizers/fusid
	$(BIN)/python -c "from recipes.sft.model_utils import load_causal_lm; load_causal_lm('smollm2', cache_dir='runs/model_cache')"
	$(BIN)/python -m bench.t2mr_experiments --plan recipes/SmolLM2-135M-Instruct/t2mr/val_ablation.yaml \
		--out_dir runs/t2mr_val --parallel $(T2MR_PARALLEL)
	$(BIN)/python -m bench.t2mr_experiments --plan recipes/SmolLM2-135M-Instruct/t2mr/eval_final.yaml \
		--out_dir runs/t2mr_eval --parallel $(T2MR_PARALLEL)

t2mr_report: venv
	test -f runs/spotify_val/dr_derived/dr.jsonl || $(BIN)/music3m-dr --run_dir runs/spotify_val --mode derived \
		--dqt runs/spotify_val/dqt/rich/dqt.jsonl,runs/spotify_val/dqt/playlists/dqt.jsonl \
		--token_db_dir runs/spotify_val/tokenizers/rqvae --out_dir runs/spotify_val/dr_derived
	test -f runs/spotify_val/relevance/report.json || $(BIN)/music3m-relevance --dr runs/spotify_val/dr_derived/dr.jsonl \
		--out_dir runs/spotify_val/relevance --epochs 2 --max_train_rows 12000
	$(BIN)/python -m bench.t2mr_report --val_dir runs/t2mr_val --eval_dir runs/t2mr_eval \
		--relevance runs/spotify_val/relevance --out runs/t2mr_report/t2mr_results.md

# Speed benchmarks (README, Performance). Their data: the Spotify RQ-VAE token database (reused when trained) and
# 6,000 template D_qt queries of the first 2,000 tracks.
BENCH ?= runs/bench
bench_data: venv
	$(BIN)/python -m bench.spotify_tokenizers --csv $(SHARED)/spotify_songs/spotify_songs.csv --run_dir runs/spotify_bench \
		--methods rqvae
	test -f $(BENCH)/dqt/dqt.jsonl || $(BIN)/python -m data_gen.synth.dqt --run_dir runs/spotify_bench --mode template \
		--num_queries 3 --max_tracks 2000 --out_dir $(BENCH)/dqt

bench: bench_data
	$(BIN)/python -m bench.retrieval_scale --out $(BENCH)/retrieval_scale.json
	$(BIN)/python -m bench.decoding_overhead --token_db_dir runs/spotify_bench/tokenizers/rqvae

bench_gpu: bench_data
	$(BIN)/python -m pip install --quiet -r requirements-gpu.txt
	$(BIN)/python -m bench.sft_throughput --config recipes/Qwen2.5-1.5B-Instruct/sft/config_random_init.yaml \
		--token_db_dir runs/spotify_bench/tokenizers/rqvae --dqt_path $(BENCH)/dqt/dqt.jsonl --steps 40 --warmup 10 \
		--out $(BENCH)/sft_throughput.json
	test ! -f runs/spotify_bench/dqt/basic/dqt.parquet || $(BIN)/python -m bench.sft_throughput \
		--config recipes/SmolLM2-135M-Instruct/sft/config_spotify.yaml --token_db_dir runs/spotify_bench/tokenizers/rqvae \
		--dqt_path runs/spotify_bench/dqt/basic/dqt.parquet --catalog_path runs/spotify_bench/catalog.parquet \
		--new_token_init mean --steps 500 --warmup 10 --rows stock128,fast128_compile,fast128_compile_fused \
		--out $(BENCH)/sft_smollm2.json
	$(BIN)/python -m bench.rqvae_scale --tracks 1600000 --epochs_measured 2 --plain_steps 200 \
		--variants float32:1,bfloat16:1,bfloat16:1:3 --profile_steps 10 --out $(BENCH)/rqvae_scale.json
	if [ "$$($(BIN)/python -c 'import torch; print(torch.cuda.device_count())')" -gt 1 ]; then \
		$(BIN)/python -m bench.sft_scaling --token_db_dir runs/spotify_bench/tokenizers/rqvae \
			--dqt_path $(BENCH)/dqt/dqt.jsonl --rows stock128,fast128_compile_fused --out_dir $(BENCH)/scaling; fi

clean:
	rm -rf runs .pytest_cache
