"""Model, data and trainer of the 3MTokenRec SFT recipe: options -> (model, tokenizer, dataset) -> SFTTrainer."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from recipes.sft.configs import SFTScriptArguments
from recipes.sft.data import build_sft_dataset
from recipes.sft.fast_path import FastSFTTrainer, prepare_fast_model
from recipes.sft.model_utils import load_causal_lm, load_tokenizer, random_init_causal_lm
from recipes.sft.tasks import alignment_examples, parse_tasks
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.token_text import token_texts
from tokenizer_ext.vocab import extend_model_vocabulary

logger = logging.getLogger(__name__)


def load_model_and_data(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Tokenizer + music vocabulary, model with resized embeddings, SFT dataset -> (model, tokenizer, dataset,
    counts, vocab_info)."""
    # Tokenizer + music vocabulary, then the dataset (it needs the new tokens to tokenize the answers).
    db = TokenDB.load(script_args.token_db_dir)
    tokenizer = load_tokenizer(script_args.tokenizer_name_or_path or model_args.model_name_or_path,
                               gguf_file=None if script_args.tokenizer_name_or_path else script_args.gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    if script_args.random_init_config:
        model = random_init_causal_lm(script_args.random_init_config, dtype=model_args.dtype,
                                      attn_implementation=model_args.attn_implementation)
    else:
        model = load_causal_lm(model_args.model_name_or_path, gguf_file=script_args.gguf_file,
                               cache_dir=script_args.model_cache_dir, dtype=model_args.dtype,
                               attn_implementation=model_args.attn_implementation)
    catalog = script_args.catalog_path or default_catalog(script_args.token_db_dir)
    texts = None
    if script_args.new_token_init == "text":
        texts = token_texts(db, catalog)
    vocab_info = extend_model_vocabulary(model, tokenizer, db.vocabulary(),
                                         pad_to_multiple_of=script_args.pad_vocab_to_multiple_of,
                                         init_noise_std=script_args.new_token_init_noise, seed=training_args.seed,
                                         init_texts=texts)
    logger.info("vocabulary extension: %s", vocab_info)

    extra = alignment_examples(catalog, db, parse_tasks(script_args.alignment_tasks), script_args.system_prompt,
                               per_track=script_args.alignment_per_track, seed=training_args.seed) \
        if script_args.alignment_tasks else []
    dataset, counts, requests = build_sft_dataset(
        script_args.dqt_path, db, tokenizer, script_args.system_prompt, max_length=training_args.max_length,
        extra_train=extra, repeats=script_args.dqt_repeat, num_proc=training_args.dataset_num_proc,
        cache_dir=script_args.dataset_cache_dir)
    counts["alignment_tasks"] = dict(Counter(ex["task"] for ex in extra))
    counts["mean_train_tokens"] = sum(map(len, dataset["train"]["input_ids"])) / max(len(dataset["train"]), 1)
    logger.info("SFT examples: %s", counts)
    return model, tokenizer, dataset, counts, vocab_info, requests


def default_catalog(token_db_dir: str | Path) -> str | None:
    """The catalog of the run a token database was trained on (its manifest's run_dir), if it exists."""
    manifest = Path(token_db_dir) / "manifest.json"
    if manifest.exists():
        run_dir = json.loads(manifest.read_text()).get("run_dir") or \
            json.loads(manifest.read_text()).get("config", {}).get("run_dir")
        if run_dir and (Path(run_dir) / "catalog.parquet").exists():
            return str(Path(run_dir) / "catalog.parquet")
    return None


def build_trainer(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig, model,
                  tokenizer, dataset, vocab_info: dict) -> SFTTrainer:
    """The stock SFTTrainer, or the fast path's (packed rows, answer-only loss) when script_args.fast_path."""
    train = dataset["train"]
    if script_args.max_train_samples:
        train = train.select(range(min(script_args.max_train_samples, len(train))))

    peft_config = get_peft_config(model_args)
    if peft_config is not None:  # the new rows must learn even when the rest is frozen
        new_ids = list(range(vocab_info["tokens_before"], vocab_info["tokens_after"]))
        peft_config.trainable_token_indices = {"embed_tokens": new_ids}

    trainer_cls, extra = SFTTrainer, {}
    if script_args.fast_path:
        prepare_fast_model(model, compile_layers=script_args.fast_path_compile, liger=script_args.fast_path_liger)
        trainer_cls, extra = FastSFTTrainer, {"fused_ce": script_args.fast_path_fused_ce}
    return trainer_cls(model=model, args=training_args, train_dataset=train,
                       eval_dataset=dataset["test"] if training_args.eval_strategy != "no" and "test" in dataset else None,
                       processing_class=tokenizer, peft_config=peft_config, **extra)
