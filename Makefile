# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment on first use (and refresh it when a requirements file changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo
SHARED ?= ../shared/data
STAMP  := $(VENV)/.installed

.PHONY: venv test slow_test demo spotify spotify_bench clean help

help:
	@echo "make demo       set up, then run the pipeline on the generated demo catalog (into $(RUN))"
	@echo "make test       set up, then run the test suite"
	@echo "make slow_test  also run the slow tests"
	@echo "make spotify    ingest + vectorize the Spotify Songs CSV from $(SHARED) into runs/spotify"
	@echo "make spotify_bench  (GPU) tokenizers, D_qt, one SFT per tokenizer, T2MR table into runs/spotify_bench"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone, so that pip takes the CPU build where the machine provides one
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q -m "not slow"

slow_test: venv
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/python -m data_gen.ingest --source demo --run_dir $(RUN)
	$(BIN)/python -m data_gen.vectorize --run_dir $(RUN)
	$(BIN)/python -m tokenizer_ext.train --config recipes/tokenizers/rqvae_demo.yaml --run_dir $(RUN) --out_dir $(RUN)/tokenizers/rqvae
	$(BIN)/python -m data_gen.dqt --run_dir $(RUN) --mode template --num_queries 2
	$(BIN)/python -m accelerate.commands.launch --config_file accelerate_configs/cpu.yaml recipes/sft_3mtoken.py \
		--config recipes/SmolLM2-135M-Instruct/sft/config_demo.yaml --token_db_dir $(RUN)/tokenizers/rqvae \
		--dqt_path $(RUN)/dqt/dqt.jsonl --output_dir $(RUN)/sft/SmolLM2-135M-Instruct-3MTokenRec
	@echo "demo run directory: $(RUN)"
	@echo "  catalog.parquet, playlists.jsonl    ingested demo catalog"
	@echo "  embeddings/                         nine modality embeddings + presence mask"
	@echo "  tokenizers/rqvae/                   RQ-VAE tokenizer, token_db.parquet, vocabulary.txt"
	@echo "  dqt/dqt.jsonl                       D_qt queries (templates; LLM: python -m data_gen.dqt --mode llm)"
	@echo "  sft/SmolLM2-135M-Instruct-3MTokenRec/  fine-tuned model + music3m/ inference bundle"

spotify: venv
	$(BIN)/python -m data_gen.ingest --source spotify --input $(SHARED)/spotify_songs/spotify_songs.csv --run_dir runs/spotify
	$(BIN)/python -m data_gen.vectorize --run_dir runs/spotify

# The Spotify Songs benchmark end to end: split + features + the eight tokenizers (reused when trained), template
# D_qt, one SFT of SmolLM2-135M-Instruct per tokenizer with T2MR on the evaluation playlists (needs a GPU), then the
# text baselines and one table with every system: runs/spotify_bench/t2mr/all/t2mr.md
spotify_bench: venv
	$(BIN)/python -m eval.spotify_tokenizers --csv $(SHARED)/spotify_songs/spotify_songs.csv --run_dir runs/spotify_bench \
		--methods kmeans,vqvae,rqvae,rqkmeans,psrq,psrq_joint,fusid,musicrec
	$(BIN)/python -m data_gen.dqt --run_dir runs/spotify_bench --mode template --num_queries 3
	PYTHON=$(BIN)/python recipes/spotify_t2mr.sh
	$(BIN)/python -m eval.t2mr --run_dir runs/spotify_bench --playlists runs/spotify_bench/splits/playlists_eval.jsonl \
		--baselines bm25 dense artist_track_name --merge $$(ls runs/spotify_bench/t2mr/*/t2mr.json | grep -v /all/) --out_dir runs/spotify_bench/t2mr/all

clean:
	rm -rf runs .pytest_cache
