"""What the logit mask costs: greedy generation of track IDs at batch 64 on the CPU, with and without the mask.

    python bench/decoding_overhead.py --token_db_dir runs/spotify_bench/tokenizers/rqvae

The model is the demo model's shape: SmolLM2-135M-Instruct (the packaged GGUF) with its vocabulary extended by the
token database (training changes no shape, so the untrained extension costs the same per step). Both arms generate
exactly the same number of tokens (no early stop), so the ratio is the mask's own cost: the automaton replay and the
mask scatter of inference.decoding. Runs alternate (plain, masked, plain, masked, ...) so that drifts in machine
load hit both arms; the table reports the medians and their ratio (goal: at most 1.05).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from bench import REQUESTS
from common.config import parse_config
from inference.decoding import MusicTokenLogitsProcessor, build_automaton
from inference.recommend import max_answer_tokens
from recipes.sft.model_utils import load_causal_lm, load_tokenizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.vocab import extend_model_vocabulary


@dataclass
class DecodingOverheadConfig:
    """What the logit mask costs: greedy generation at batch 64 on the CPU, with and without the mask."""

    token_db_dir: str = field(default="runs/spotify_bench/tokenizers/rqvae", metadata={
        "help": "token database whose vocabulary extends the model and whose catalog the masks encode"})
    model: str = field(default="smollm2", metadata={
        "help": "base model: a name recipes.sft.model_utils resolves, or a path"})
    batch: int = field(default=64, metadata={"help": "requests per generate call"})
    repeats: int = field(default=5, metadata={"help": "alternating timed repeats per arm (medians reported)"})
    modes: str = field(default="order,catalog", metadata={
        "help": "comma-separated decoding masks timed against no mask: order, modality, catalog"})
    threads: int = field(default=0, metadata={"help": "torch threads (0: leave torch's default)"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(DecodingOverheadConfig, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    db = TokenDB.load(cfg.token_db_dir)
    tok = load_tokenizer(cfg.model)
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    model = load_causal_lm(cfg.model, cache_dir="runs/model_cache", dtype=torch.float32).eval()
    extend_model_vocabulary(model, tok, db.vocabulary(), pad_to_multiple_of=64)
    prompts = [tok.apply_chat_template([{"role": "user", "content": REQUESTS[i % len(REQUESTS)]}], tokenize=False,
                                       add_generation_prompt=True) for i in range(cfg.batch)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    steps = max_answer_tokens(db)
    vocab = model.get_output_embeddings().weight.shape[0]
    automata = {m: build_automaton(db, tok, m, vocab_size=vocab) for m in cfg.modes.split(",")}

    def generate(automaton) -> float:
        procs = [MusicTokenLogitsProcessor(automaton)] if automaton is not None else []
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, logits_processor=procs, max_new_tokens=steps, min_new_tokens=steps,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        assert out.shape[1] == enc["input_ids"].shape[1] + steps
        return time.perf_counter() - t0

    generate(None)  # warm-up
    times = {"plain": [], **{m: [] for m in automata}}
    for _ in range(cfg.repeats):
        times["plain"].append(generate(None))
        for m, a in automata.items():
            times[m].append(generate(a))
    base = statistics.median(times["plain"])
    print(f"greedy generation, batch {cfg.batch}, {steps} new tokens, {cfg.model} + {len(db.vocabulary())} music "
          f"tokens ({vocab} logits), {db.num_tracks} catalog tracks, torch threads {torch.get_num_threads()}, "
          f"{cfg.repeats} alternating repeats\n")
    print("| decoding | median s | ms / step | ratio to unmasked |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name if name != 'plain' else 'no mask'} | {med:.2f} | {1000 * med / steps:.1f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
