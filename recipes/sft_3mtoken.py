"""3MTokenRec supervised fine-tuning: base instruct LLM + token database + D_qt -> an LLM that answers requests with
track IDs, saved with its inference bundle.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft_3mtoken.py \
        --config recipes/SmolLM2-135M-Instruct/sft/config_demo.yaml
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import transformers
from transformers import set_seed
from trl import ModelConfig, SFTConfig, TrlParser

from recipes.sft.bundle import BUNDLE_DIR, model_card, save_bundle_extras
from recipes.sft.configs import CONFIG_EPILOG, SFTScriptArguments
from recipes.sft.model_utils import base_model_id
from recipes.sft.trainer import (
    build_trainer,
    delete_checkpoints,
    finished_state,
    load_model_and_data,
    read_trainer_state,
    resume_checkpoint,
    train_or_finish,
)

logger = logging.getLogger(__name__)


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    set_seed(training_args.seed)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)])
    logger.setLevel(training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.info("script %s\nmodel %s\ntraining %s", script_args, model_args, training_args)

    # A run trained to the end is reused, not trained again; else resume from --resume_from_checkpoint or the
    # last complete checkpoint in output_dir
    output_dir = training_args.output_dir
    finished = None if training_args.resume_from_checkpoint else finished_state(output_dir, training_args)
    if finished is not None:
        finish_saved_run(script_args, training_args, model_args, finished)
        return
    checkpoint = resume_checkpoint(training_args)
    if checkpoint:
        logger.warning("resuming from %s (step %d)", checkpoint, read_trainer_state(checkpoint)["global_step"])
    elif read_trainer_state(output_dir) is not None:
        logger.warning("%s holds a run that ended before the steps asked for now, and no checkpoint to continue it "
                       "(keep_checkpoints: true keeps them): training from step 0", output_dir)

    model, tokenizer, dataset, counts, vocab_info, requests = load_model_and_data(script_args, training_args,
                                                                                  model_args)
    trainer = build_trainer(script_args, training_args, model_args, model, tokenizer, dataset, vocab_info)
    metrics = train_or_finish(trainer, checkpoint)
    if metrics is not None:
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)

    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        save_bundle_extras(output_dir, script_args.token_db_dir,
                           system_prompt=script_args.system_prompt, sft_counts=counts, vocab_info=vocab_info,
                           train_requests=requests)
        model_card(output_dir, base_model_id(model_args.model_name_or_path, script_args.random_init_config),
                   {"steps": trainer.state.global_step, "batch": training_args.per_device_train_batch_size,
                    "learning rate": training_args.learning_rate, "seed": training_args.seed,
                    "new token init": script_args.new_token_init})
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(output_dir)
    trainer.save_state()  # after the final model: a re-run reads this state to know the run is complete
    if trainer.accelerator.is_main_process and not script_args.keep_checkpoints:
        delete_checkpoints(output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(tags=["3MTokenRec", "generative-retrieval", "music"])


def finish_saved_run(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig,
                     state: dict) -> None:
    """A re-run of a finished run: no training step; the tokenizer and bundle are written again if missing."""
    output_dir = training_args.output_dir
    logger.warning("run complete: %s holds the final model at step %d of %d; nothing to train (another output_dir or "
                   "--resume_from_checkpoint to train again)", output_dir, state["global_step"], state["max_steps"])
    if not (Path(output_dir) / BUNDLE_DIR / "bundle.json").exists() and training_args.process_index == 0:
        logger.warning("%s has no inference bundle: writing the tokenizer and bundle", output_dir)
        _, tokenizer, _, counts, vocab_info, requests = load_model_and_data(script_args, training_args, model_args)
        tokenizer.save_pretrained(output_dir)
        save_bundle_extras(output_dir, script_args.token_db_dir, system_prompt=script_args.system_prompt,
                           sft_counts=counts, vocab_info=vocab_info, train_requests=requests)
    if training_args.process_index == 0 and not script_args.keep_checkpoints:
        delete_checkpoints(output_dir)


if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig), epilog=CONFIG_EPILOG)
    main(*parser.parse_args_and_config())
