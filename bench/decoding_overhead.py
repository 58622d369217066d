"""What the logit mask costs: greedy generation of track IDs at batch 64 on the CPU, with and without the mask.

    python bench/decoding_overhead.py --token_db_dir runs/spotify_bench/tokenizers/rqvae

The model is the demo model's shape: SmolLM2-135M-Instruct (the packaged GGUF) with its vocabulary extended by the
token database (training changes no shape, so the untrained extension costs the same per step). Both arms generate
exactly the same number of tokens (no early stop), so the ratio is the mask's own cost: the automaton replay and the
mask scatter of eval.decoding. Runs alternate (plain, masked, plain, masked, ...) so that drifts in machine load hit
both arms; the table reports the medians and their ratio. Goal (issue 6): at most 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eval.decoding import MusicTokenLogitsProcessor, build_automaton
from eval.recommend import max_answer_tokens
from tokenizer_ext.model_utils import load_causal_lm, load_tokenizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.vocab import extend_model_vocabulary

REQUESTS = ["play some 90s rock for a road trip", "chill lofi beats to study to", "upbeat latin pop for a party",
            "sad songs from the 2000s", "energetic edm for the gym", "classic hip hop from the 90s",
            "acoustic songs for a rainy sunday", "r&b slow jams"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--token_db_dir", default="runs/spotify_bench/tokenizers/rqvae")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default="order,catalog")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    db = TokenDB.load(args.token_db_dir)
    tok = load_tokenizer(args.model)
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    model = load_causal_lm(args.model, cache_dir="runs/model_cache", dtype=torch.float32).eval()
    extend_model_vocabulary(model, tok, db.vocabulary(), pad_to_multiple_of=64)
    prompts = [tok.apply_chat_template([{"role": "user", "content": REQUESTS[i % len(REQUESTS)]}], tokenize=False,
                                       add_generation_prompt=True) for i in range(args.batch)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    steps = max_answer_tokens(db)
    vocab = model.get_output_embeddings().weight.shape[0]
    automata = {m: build_automaton(db, tok, m, vocab_size=vocab) for m in args.modes.split(",")}

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
    for _ in range(args.repeats):
        times["plain"].append(generate(None))
        for m, a in automata.items():
            times[m].append(generate(a))
    base = statistics.median(times["plain"])
    print(f"greedy generation, batch {args.batch}, {steps} new tokens, {args.model} + {len(db.vocabulary())} music "
          f"tokens ({vocab} logits), {db.num_tracks} catalog tracks, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} alternating repeats\n")
    print("| decoding | median s | ms / step | ratio to unmasked |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name if name != 'plain' else 'no mask'} | {med:.2f} | {1000 * med / steps:.1f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
