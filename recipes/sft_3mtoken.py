"""3MTokenRec supervised fine-tuning: base instruct LLM + token database + D_qt -> an LLM that answers requests with
track IDs, saved with its inference bundle.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft_3mtoken.py \
        --config recipes/SmolLM2-135M-Instruct/sft/config_demo.yaml
"""

from __future__ import annotations

import logging
import os
import sys

import transformers
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTConfig, TrlParser

from recipes.sft.bundle import save_bundle_extras
from recipes.sft.configs import CONFIG_EPILOG, SFTScriptArguments
from recipes.sft.trainer import build_trainer, load_model_and_data

logger = logging.getLogger(__name__)


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

    model, tokenizer, dataset, counts, vocab_info, requests = load_model_and_data(script_args, training_args,
                                                                                  model_args)
    trainer = build_trainer(script_args, training_args, model_args, model, tokenizer, dataset, vocab_info)
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
        save_bundle_extras(training_args.output_dir, script_args.token_db_dir,
                           system_prompt=script_args.system_prompt, sft_counts=counts, vocab_info=vocab_info,
                           train_requests=requests)
        trainer.create_model_card(model_name=os.path.basename(training_args.output_dir.rstrip("/")),
                                  tags=["3MTokenRec", "generative-retrieval", "music"])
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(tags=["3MTokenRec", "generative-retrieval", "music"])


if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig), epilog=CONFIG_EPILOG)
    main(*parser.parse_args_and_config())
