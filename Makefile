# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment on first use (and refresh it when a requirements file changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo
SHARED ?= ../shared/data
STAMP  := $(VENV)/.installed

.PHONY: venv test slow_test demo spotify clean help

help:
	@echo "make demo       set up, then run the pipeline on the generated demo catalog (into $(RUN))"
	@echo "make test       set up, then run the test suite"
	@echo "make slow_test  also run the slow tests"
	@echo "make spotify    ingest + vectorize the Spotify Songs CSV from $(SHARED) into runs/spotify"

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
	@echo "demo run directory: $(RUN) (catalog.parquet, playlists.jsonl, embeddings/)"

spotify: venv
	$(BIN)/python -m data_gen.ingest --source spotify --input $(SHARED)/spotify_songs/spotify_songs.csv --run_dir runs/spotify
	$(BIN)/python -m data_gen.vectorize --run_dir runs/spotify

clean:
	rm -rf runs .pytest_cache
