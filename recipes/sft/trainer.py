"""Model, data and trainer of the 3MTokenRec SFT recipe: options -> (model, tokenizer, dataset) -> SFTTrainer; and
where a run stands in its output_dir: finished, or the checkpoint to resume from.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections import Counter
from pathlib import Path

from transformers import TrainerState
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from recipes.sft.configs import SFTScriptArguments
from recipes.sft.data import build_sft_dataset
from recipes.sft.fast_path import FastSFTTrainer, PackedCollator, prepare_fast_model
from recipes.sft.model_utils import (
    check_tokenizer_round_trip,
    load_causal_lm,
    load_tokenizer,
    random_init_causal_lm,
)
from recipes.sft.tasks import alignment_examples, parse_tasks
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.token_text import token_texts
from tokenizer_ext.vocab import extend_model_vocabulary

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last into a checkpoint; the recipe last after the model
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def load_model_and_tokenizer(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig,
                             db: TokenDB, device: str | None = None):
    """Tokenizer + music vocabulary and the model with resized embeddings -> (model, tokenizer, vocab_info). A random
    initialisation (`random_init_config`) is built directly on `device`; pretrained weights are moved there."""
    import torch

    catalog = script_args.catalog_path or default_catalog(script_args.token_db_dir)
    if script_args.new_token_init == "text" and not catalog:
        raise ValueError(f"new_token_init: text describes each code by its tracks' catalog fields, and no catalog was "
                         f"found: set catalog_path (the token database {script_args.token_db_dir} names no run with "
                         f"a catalog.parquet)")
    tokenizer = load_tokenizer(script_args.tokenizer_name_or_path or model_args.model_name_or_path,
                               gguf_file=None if script_args.tokenizer_name_or_path else script_args.gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if script_args.random_init_config:
        with torch.device(device or "cpu"):
            model = random_init_causal_lm(script_args.random_init_config, dtype=model_args.dtype,
                                          attn_implementation=model_args.attn_implementation)
    else:
        model = load_causal_lm(model_args.model_name_or_path, gguf_file=script_args.gguf_file,
                               cache_dir=script_args.model_cache_dir, dtype=model_args.dtype,
                               attn_implementation=model_args.attn_implementation)
        if device:
            model.to(device)
    texts = token_texts(db, catalog) if script_args.new_token_init == "text" else None
    vocab_info = extend_model_vocabulary(model, tokenizer, db.vocabulary(),
                                         pad_to_multiple_of=script_args.pad_vocab_to_multiple_of,
                                         init_noise_std=script_args.new_token_init_noise, seed=training_args.seed,
                                         init_texts=texts)
    logger.info("vocabulary extension: %s", vocab_info)
    check_tokenizer_round_trip(tokenizer, script_args.system_prompt)  # the bundle's tokenizer, before any training
    return model, tokenizer, vocab_info


def load_model_and_data(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Tokenizer + music vocabulary, model with resized embeddings, SFT dataset -> (model, tokenizer, dataset,
    counts, vocab_info)."""
    # Tokenizer + music vocabulary, then the dataset (it needs the new tokens to tokenize the answers).
    db = TokenDB.load(script_args.token_db_dir)
    model, tokenizer, vocab_info = load_model_and_tokenizer(script_args, training_args, model_args, db)
    catalog = script_args.catalog_path or default_catalog(script_args.token_db_dir)

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

    tie_head_on_resume(model)
    trainer_cls, extra = SFTTrainer, {}
    if script_args.fast_path:
        prepare_fast_model(model, compile_layers=script_args.fast_path_compile, liger=script_args.fast_path_liger,
                           fuse_projections=script_args.fast_path_fuse_projections, fp8=script_args.fast_path_fp8,
                           compile_mode=script_args.fast_path_compile_mode)
        trainer_cls, extra = FastSFTTrainer, {"data_collator": PackedCollator(
                                                  share_prefix=script_args.fast_path_share_prefix),
                                              "fused_ce": script_args.fast_path_fused_ce,
                                              "compile_loss": script_args.fast_path_compile_loss,
                                              "fused_clip": script_args.fast_path_fused_clip}
    evaluate = training_args.eval_strategy != "no" and "test" in dataset
    return trainer_cls(model=model, args=training_args, train_dataset=train,
                       eval_dataset=dataset["test"] if evaluate else None,
                       processing_class=tokenizer, peft_config=peft_config, **extra)


def tie_head_on_resume(model) -> None:
    """A checkpoint does not store a head tied to the input embedding (safetensors keeps one copy of a shared tensor).
    Naming the tied keys here makes the Trainer re-tie them when it resumes, instead of warning that they are
    missing; the head stays the input embedding either way (tests/recipes/test_resume.py)."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    if tied:
        model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | set(tied)


def read_trainer_state(folder: str | Path) -> dict | None:
    path = Path(folder) / TRAINER_STATE
    return json.loads(path.read_text()) if path.exists() else None


def reaches_end(state: dict, args: SFTConfig) -> bool:
    """True when a trainer state already went as far as `args` asks: max_steps, or else the same number of epochs."""
    step = state.get("global_step", 0)
    if args.max_steps > 0:
        return step >= args.max_steps
    same_epochs = state.get("num_train_epochs") == math.ceil(args.num_train_epochs)
    return same_epochs and step >= state.get("max_steps", math.inf)


def checkpoints(output_dir: str | Path) -> list[Path]:
    """checkpoint-N folders of output_dir by step, complete ones only (the Trainer writes trainer_state.json last)."""
    found = sorted((int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*")
                   if p.is_dir() and (m := _CHECKPOINT.match(p.name)))
    for _, p in found:
        if not (p / TRAINER_STATE).exists():
            logger.warning("%s is incomplete (no %s: the run stopped while saving it); not resumed from", p,
                           TRAINER_STATE)
    return [p for _, p in found if (p / TRAINER_STATE).exists()]


def finished_state(output_dir: str | Path, args: SFTConfig) -> dict | None:
    """The trainer state of a run in output_dir whose final model is saved and which reached the end `args` asks for;
    None when there is no such run (the recipe writes output_dir/trainer_state.json after the final model)."""
    state = read_trainer_state(output_dir)
    return state if state is not None and reaches_end(state, args) else None


def resume_checkpoint(args: SFTConfig) -> str | None:
    """The checkpoint to resume from: --resume_from_checkpoint when given, else the last complete one in output_dir."""
    if args.resume_from_checkpoint:
        if read_trainer_state(args.resume_from_checkpoint) is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {args.resume_from_checkpoint}: not a complete "
                                    f"checkpoint (no {TRAINER_STATE})")
        return str(args.resume_from_checkpoint)
    found = checkpoints(args.output_dir) if Path(args.output_dir).is_dir() else []
    return str(found[-1]) if found else None


def train_or_finish(trainer: SFTTrainer, checkpoint: str | None) -> dict | None:
    """trainer.train from the checkpoint -> its metrics; None when the checkpoint already is at the end of the run:
    its weights and state are loaded as they are (Trainer.train would run one step past max_steps)."""
    state = read_trainer_state(checkpoint) if checkpoint else None
    if state is not None and reaches_end(state, trainer.args):
        logger.warning("%s is at step %d, the end of this run: it becomes the final model, no step is trained",
                       checkpoint, state["global_step"])
        trainer._load_from_checkpoint(checkpoint)  # what train() itself calls on resume (pinned transformers)
        trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE))
        return None
    return trainer.train(resume_from_checkpoint=checkpoint).metrics


def delete_checkpoints(output_dir: str | Path) -> None:
    """Remove every checkpoint-N folder (weights + optimizer state) once the final model is saved."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and _CHECKPOINT.match(p.name)]
    size = sum(f.stat().st_size for p in folders for f in p.rglob("*") if f.is_file())
    for p in folders:
        shutil.rmtree(p)
    if folders:
        logger.warning("removed %d checkpoint folder(s), %.1f MB (keep_checkpoints: true keeps them)", len(folders),
                       size / 1e6)
