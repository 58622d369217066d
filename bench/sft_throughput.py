"""Stock TRL SFTTrainer vs the recipe's fast path, in one process on one GPU: recipe YAML + D_qt + token DB -> a
markdown table of non-padding tokens/s per GPU, MFU, peak memory, and both loss curves over the same first steps.

    python bench/sft_throughput.py --config recipes/Qwen2.5-1.5B-Instruct/sft/config_random_init.yaml \
        --token_db_dir TOKEN_DB_DIR --dqt_path DQT.parquet --steps 40 --warmup 10 --out runs/bench/sft_throughput.json

Several GPUs: launch it like the recipe, e.g. `accelerate launch --config_file accelerate_configs/ddp.yaml
--num_processes 2 bench/sft_throughput.py --rows fast128_compile ...` (zero2.yaml / zero3.yaml: DeepSpeed);
`python -m bench.sft_scaling` runs 1 GPU, DDP, ZeRO-2 and ZeRO-3 and prints the scaling efficiency. The options: the
benchmark's own (BenchArguments) and the recipe's (--config YAML, --token_db_dir, ...), parsed by one TrlParser.

Every row builds the model through the recipe (recipes/sft/trainer.py: load_model_and_data, build_trainer) with the
same seed, so every row starts from the same weights and sees the same examples in the same order; only the
per-device batch and the fast-path switches differ. Model FLOPs per step = 6 x non-embedding parameters x tokens
+ 6 x LM-head parameters x answer tokens (the loss needs the head there only) + causal attention 6 x L^2 x d per
example and layer; MFU = that / step time / --peak_tflops (989 TFLOP/s: dense bf16 of an H100/H200 SXM). Timing
starts after --warmup steps (compilation, allocator warm-up) and ends at the last step, with a device sync at both.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback, set_seed
from trl import ModelConfig, SFTConfig, TrlParser

from recipes.sft.configs import CONFIG_EPILOG, SFTScriptArguments
from recipes.sft.trainer import build_trainer, load_model_and_data, load_model_and_tokenizer
from tokenizer_ext.token_db import TokenDB


def row(label, batch, fast=False, compile=False, liger=False, fused_ce=False, checkpointing=False, workers=0,
        host_sync=False, fuse=False, fp8=False, compile_mode="default", compile_loss=False, fused_clip=False,
        share_prefix=False) -> dict:
    return dict(label=label, batch=batch, fast=fast, compile=compile, liger=liger, fused_ce=fused_ce,
                checkpointing=checkpointing, workers=workers, host_sync=host_sync, fuse=fuse, fp8=fp8,
                compile_mode=compile_mode, compile_loss=compile_loss, fused_clip=fused_clip, share_prefix=share_prefix)


# TRL's SFTConfig turns gradient checkpointing on by default; the fast path turns it off (peak memory stays far below
# the card). host_sync: the Trainer's per-step NaN/Inf loss check (a host read of the loss) left on, as in stock.
# workers: DataLoader worker processes (collation off the training process). Liger rows last: Liger patches
# transformers' Qwen2 module globally.
ROWS = {  # run order
    "stock32": row("stock TRL SFTTrainer (defaults: padding, gradient checkpointing), batch 32", 32,
                   checkpointing=True, host_sync=True),
    "fast32_compile": row("fast path (packed varlen, answer-only head, no checkpointing) + compile per layer, batch 32",
                          32, fast=True, compile=True, workers=2),
    "stock128": row("stock TRL SFTTrainer, padding, batch 128 (best stock setting of the issue)", 128,
                    checkpointing=True, host_sync=True),
    "stock128_nogc": row("stock TRL SFTTrainer, padding, batch 128, gradient checkpointing off", 128, host_sync=True),
    "fast128": row("fast path: packed rows + varlen attention + answer-only head, no checkpointing, batch 128", 128,
                   fast=True, workers=2),
    "fast128_prefix": row("fast path + the shared system turn computed once per row, no compile, batch 128", 128,
                          fast=True, workers=2, share_prefix=True),
    "fast128_compile_sync": row("fast path + torch.compile per decoder layer, host sync per step, collation in the "
                                "training process, batch 128", 128, fast=True, compile=True, host_sync=True),
    "fast128_compile_nosync": row("fast path + compile, no host sync per step, collation in the training process, "
                                  "batch 128", 128, fast=True, compile=True),
    "fast128_compile": row("fast path + compile, no host sync, 2 DataLoader workers, batch 128", 128, fast=True,
                           compile=True, workers=2),
    "fast128_compile_fused": row("fast path + compile + fused q/k/v and gate/up projections, no host sync, 2 workers, "
                                 "batch 128", 128, fast=True, compile=True, workers=2, fuse=True),
    "fast128_compile_fused_clip": row("fast path + compile + fused projections + clipping inside the fused AdamW "
                                      "step, no host sync, 2 workers, batch 128", 128, fast=True, compile=True,
                                      workers=2, fuse=True, fused_clip=True),
    "fast128_compile_fused_loss": row("fast path + compile + fused projections + compiled cross-entropy, no host "
                                      "sync, 2 workers, batch 128", 128, fast=True, compile=True, workers=2,
                                      fuse=True, compile_loss=True),
    "fast128_compile_fused_lean": row("fast path + compile + fused projections + compiled cross-entropy + clipping "
                                      "inside the fused AdamW step, no host sync, 2 workers, batch 128", 128,
                                      fast=True, compile=True, workers=2, fuse=True, compile_loss=True,
                                      fused_clip=True),
    "fast128_compile_fused_autotune": row("fast path + compile with Inductor's autotuning (max-autotune-no-cudagraphs) "
                                          "+ fused projections, no host sync, 2 workers, batch 128", 128, fast=True,
                                          compile=True, workers=2, fuse=True,
                                          compile_mode="max-autotune-no-cudagraphs"),
    "fast128_compile_fused_lean_cd": row("fast path + compile with coordinate-descent tuning of Inductor's pointwise "
                                         "and reduction kernels + fused projections + compiled cross-entropy + "
                                         "clipping inside AdamW, no host sync, 2 workers, batch 128", 128, fast=True,
                                         compile=True, workers=2, fuse=True, compile_loss=True, fused_clip=True,
                                         compile_mode="coordinate-descent"),
    "fast128_compile_fused_lean_prefix": row("fast path + compile + fused projections + compiled cross-entropy + "
                                             "clipping inside AdamW + the shared system turn computed once per row, "
                                             "no host sync, 2 workers, batch 128", 128, fast=True, compile=True,
                                             workers=2, fuse=True, compile_loss=True, fused_clip=True,
                                             share_prefix=True),
    "fast128_compile_fp8": row("fast path + compile + float8 matmuls in the decoder layers (torchao), no host sync, "
                               "2 workers, batch 128", 128, fast=True, compile=True, workers=2, fp8=True),
    "fast128_compile_fused_fp8": row("fast path + compile + fused projections + float8 matmuls (torchao), no host "
                                     "sync, 2 workers, batch 128", 128, fast=True, compile=True, workers=2, fuse=True,
                                     fp8=True),
    "fast128_compile_ce": row("fast path + compile + fused LM head/cross-entropy (Liger), no host sync, 2 workers, "
                              "batch 128", 128, fast=True, compile=True, fused_ce=True, workers=2),
    "fast256_compile_ce": row("fast path + compile + fused LM head/cross-entropy, batch 256", 256, fast=True,
                              compile=True, fused_ce=True, workers=2),
    "fast128_liger": row("fast path + Liger RMSNorm/SwiGLU/RoPE (no compile), no host sync, 2 workers, batch 128", 128,
                         fast=True, liger=True, workers=2),
}
# (stock, fast) pairs whose loss curves must agree. The last two are controls: the same maths with other kernels
# (recomputed activations; compiled or eager fast path), so their difference is what bf16 rounding alone does.
PARITY_PAIRS = (("stock32", "fast32_compile"), ("stock128", "fast128_compile"), ("stock128", "fast128_compile_fused"),
                ("stock128", "fast128_compile_fused_clip"), ("stock128", "fast128_compile_fused_loss"),
                ("stock128", "fast128_compile_fused_lean"), ("stock128", "fast128_compile_fused_lean_cd"),
                ("stock128", "fast128_compile_fused_lean_prefix"), ("stock128", "fast128_prefix"),
                ("stock128", "fast128_compile_fused_autotune"),
                ("stock128", "fast128_compile_fp8"), ("stock128", "fast128_compile_fused_fp8"),
                ("stock128", "fast128_compile_ce"),
                ("stock128", "fast128"), ("stock128", "fast128_liger"), ("stock128", "stock128_nogc"),
                ("fast128", "fast128_compile"))


@dataclass
class BenchArguments:
    """The benchmark's own options; every other option is the recipe's (SFTScriptArguments, SFTConfig, ModelConfig:
    --config YAML, --token_db_dir, --dqt_path, ...), parsed by the same TrlParser."""

    rows: str = field(default=",".join(ROWS), metadata={"help": f"comma-separated, from {list(ROWS)}"})
    steps: int = field(default=40, metadata={"help": "optimizer steps per row (same LR schedule in every row)"})
    warmup: int = field(default=10, metadata={"help": "steps before the clock starts"})
    peak_tflops: float = field(default=989.0, metadata={"help": "dense bf16 peak of the GPU (H100/H200 SXM)"})
    batch: int | None = field(default=None, metadata={"help": "override every row's batch (CPU smoke runs)"})
    parity_tol: float = field(default=0.01, metadata={"help": "max relative loss difference per step"})
    profile: str = field(default="", metadata={
        "help": "comma-separated rows to profile (torch.profiler, 3 steps before the timed ones): top kernels and "
                "GPU busy share"})
    time_budget_s: float = field(default=float("inf"), metadata={"help": "skip rows once this much time is spent"})
    out: str | None = field(default=None, metadata={"help": "JSON with every row and loss curve"})


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke run of the script on a tiny config
# Launched by accelerate / torchrun on several GPUs (DDP or DeepSpeed from the accelerate config), every rank runs
# every row; rank 0 prints and writes. Per-GPU figures: the ranks' tokens averaged over the slowest rank's time.
WORLD, RANK, LOCAL_RANK = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))


def say(*a, **k) -> None:
    if RANK == 0:
        print(*a, **k)


def across_ranks(values: list[float], op: str = "sum") -> list[float]:
    """Reduce a few numbers over the ranks (one collective, after a row): 'sum' or 'max'. No-op on one process."""
    import torch.distributed as dist

    if WORLD == 1 or not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=DEVICE if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    """Wall time between the end of step `start` and the end of the last step, with a device sync at both."""

    def __init__(self, start: int):
        self.start, self.t0, self.t1 = start, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.start or state.global_step == state.max_steps:
            sync()
            if state.global_step == self.start:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()


class StepRecorder:
    """Per training step, from the batch on the device: non-padding tokens, answer tokens, sum of squared example
    lengths, and the loss. Shapes are read at once; sums stay device tensors until the end (no host sync per step),
    and the batch is read in the training process, so DataLoader workers change nothing."""

    def __init__(self):
        self.steps = []  # (tokens, answer, squared lengths, loss, tokens computed): ints or 0-d device tensors

    def __call__(self, inputs: dict, loss: torch.Tensor) -> None:
        if "cu_seq_lens" in inputs:  # packed fast-path row
            cu = inputs.get("cu_seq_lens_k", inputs["cu_seq_lens"])
            lens = cu[1:] - cu[:-1]
            if "kv_index" in inputs:  # a shared prefix: its own sequence first, then the examples' full lengths
                lens = lens[1:]
            # the examples' tokens (those stock processes); fewer go through the decoder when a prefix is shared
            tokens = inputs.get("chat_tokens", inputs["input_ids"].numel())
            self.steps.append((tokens, inputs["answer_positions"].numel(), lens.long().pow(2).sum(), loss.detach(),
                               inputs["input_ids"].numel()))
        else:  # padded stock batch
            lens = inputs["attention_mask"].sum(1)
            if "labels" in inputs:
                answer = (inputs["labels"][:, 1:] != -100).sum()
            else:  # TRL's completion_mask: 1 on answer tokens; the first token predicts nothing
                answer = (inputs["completion_mask"][:, 1:] * inputs["attention_mask"][:, 1:]).sum()
            self.steps.append((lens.sum(), answer, lens.long().pow(2).sum(), loss.detach(), lens.sum()))

    def totals(self, first: int, last: int) -> tuple[int, int, int]:
        timed = self.steps[first:last]
        return tuple(int(sum(int(s[i]) for s in timed)) for i in range(3))

    def computed(self, first: int, last: int) -> int:
        """Tokens through the decoder over the steps (below the examples' tokens when a prefix is shared)."""
        return int(sum(int(s[4]) for s in self.steps[first:last]))

    def losses(self) -> list[float]:
        return [float(s[3]) for s in self.steps]


class ProfileSteps(TrainerCallback):
    """torch.profiler over steps (start, start + n]: the top GPU kernels and the share of the wall time the GPU was busy
    (kernel time / elapsed; below 1 = the GPU waited on the host)."""

    def __init__(self, start: int, n: int, top: int = 25):
        self.start, self.n, self.top, self.prof, self.t0, self.report = start, n, top, None, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.start:
            sync()
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                           torch.profiler.ProfilerActivity.CUDA])
            self.prof.__enter__()
            self.t0 = time.perf_counter()
        elif state.global_step == self.start + self.n and self.prof is not None:
            sync()
            wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)
            events = self.prof.key_averages()
            kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
            self.report = {"steps": self.n, "wall_ms_per_step": 1e3 * wall / self.n,
                           "gpu_busy_ms_per_step": kernel_us / 1e3 / self.n,
                           "table": events.table(sort_by="self_device_time_total", row_limit=self.top,
                                                 max_name_column_width=70)}
            say(f"profile, {self.n} steps: wall {self.report['wall_ms_per_step']:.1f} ms/step, GPU kernels "
                f"{self.report['gpu_busy_ms_per_step']:.1f} ms/step (busy "
                f"{self.report['gpu_busy_ms_per_step'] / self.report['wall_ms_per_step']:.0%}; profiler on)\n"
                f"{self.report['table']}", flush=True)
            self.prof = None


def model_flops(model, tokens: int, answer: int, sq_lens: int) -> float:
    """Training FLOPs: `tokens` through the decoder, `answer` tokens through the LM head, `sq_lens` the sum of the
    examples' squared lengths (causal attention; with a shared prefix an upper bound)."""
    cfg = model.config
    emb = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - emb  # tied head: counted once, as the embedding
    head = cfg.vocab_size * cfg.hidden_size
    d_attn = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    attention = 6 * d_attn * cfg.num_hidden_layers * sq_lens  # causal: half of 4 L^2 d forward, x3 with backward
    return 6 * body * tokens + 6 * head * answer + attention


def fresh_model(script_args, training_args, model_args):
    """The recipe's model (random init from the JSON config, or the pretrained weights; vocabulary extension) on the
    benchmark's device, seeded."""
    set_seed(training_args.seed)
    return load_model_and_tokenizer(script_args, training_args, model_args, TokenDB.load(script_args.token_db_dir),
                                    device=DEVICE)


def run_row(key, script_args, training_args, model_args, dataset, steps, warmup, peak_tflops,
            batch_override: int | None = None, profile_steps: int = 0) -> dict:
    spec = ROWS[key]
    batch = batch_override or spec["batch"]
    sa = copy.deepcopy(script_args)
    sa.fast_path, sa.fast_path_compile, sa.fast_path_liger = spec["fast"], spec["compile"], spec["liger"]
    sa.fast_path_fused_ce, sa.fast_path_fuse_projections, sa.fast_path_fp8 = spec["fused_ce"], spec["fuse"], spec["fp8"]
    sa.fast_path_compile_mode = spec["compile_mode"]
    sa.fast_path_compile_loss, sa.fast_path_fused_clip = spec["compile_loss"], spec["fused_clip"]
    sa.fast_path_share_prefix = spec["share_prefix"]
    ta = copy.deepcopy(training_args)
    ta.per_device_train_batch_size, ta.max_steps, ta.gradient_checkpointing = batch, steps, spec["checkpointing"]
    ta.dataloader_drop_last = True  # every step the same number of examples (and no recompile for a short batch)
    ta.dataloader_num_workers = spec["workers"]
    ta.dataloader_persistent_workers = spec["workers"] > 0
    model, tokenizer, vocab_info = fresh_model(sa, ta, model_args)
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = build_trainer(sa, ta, model_args, model, tokenizer, dataset, vocab_info)
    trainer.args.logging_nan_inf_filter = spec["host_sync"]  # the fast path turns it off; this row may want it
    clock = StepClock(warmup)
    trainer.add_callback(clock)
    profiler = None
    if profile_steps:  # profiled before the clock starts (after compilation), so the timed steps are not slowed
        profiler = ProfileSteps(max(warmup - profile_steps - 1, 1), profile_steps)
        trainer.add_callback(profiler)
    recorder = StepRecorder()
    step = trainer.training_step

    def recorded_step(model, inputs, *a, **k):
        loss = step(model, inputs, *a, **k)
        recorder(inputs, loss)  # noqa: F821 (bound in the enclosing function; deleted only after training)
        return loss

    trainer.training_step = recorded_step
    t_start = time.perf_counter()
    trainer.train()
    total_s = time.perf_counter() - t_start
    tokens, answer, sq = recorder.totals(warmup, steps)
    computed = recorder.computed(warmup, steps)
    local_seconds = clock.t1 - clock.t0
    # per GPU: the ranks' mean tokens over the slowest rank's time; the loss: the ranks' losses summed (each is its
    # share of the global answer-token mean: loss_sum_rank x ranks / global count) / ranks = the global mean
    tokens, answer, sq, computed = (x / WORLD for x in across_ranks([tokens, answer, sq, computed]))
    seconds = across_ranks([local_seconds], "max")[0]
    losses = [x / WORLD for x in across_ranks(recorder.losses())]
    # MFU counts the FLOPs the GPU executed: with a shared prefix, the decoder's tokens (fewer than the examples')
    flops = model_flops(trainer.model if not hasattr(trainer.model, "module") else trainer.model.module,
                        computed, answer, sq)
    row = {"key": key, "label": spec["label"], "batch": batch, "steps": steps, "timed_steps": steps - warmup,
           "gpus": WORLD, "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
           "seconds": seconds, "tokens_per_s": tokens / seconds, "mfu": flops / seconds / (peak_tflops * 1e12),
           "computed_tokens_per_s": computed / seconds,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0,
           "train_wall_s": total_s,
           "mean_tokens_per_example": tokens / (batch * (steps - warmup)), "losses": losses,
           "profile": profiler.report if profiler else None}
    del trainer, model, recorder
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return row


def matmul_tflops(m: int = 8192, n: int = 8960, k: int = 1536, reps: int = 50) -> float:
    """bf16 GEMM rate at the MLP shape of one packed row (what the card's matmuls reach here, for context)."""
    a = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(k, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * m * n * k * reps / (time.perf_counter() - t) / 1e12


def print_tables(rows: list[dict], device: str, parity_tol: float) -> dict:
    gpus = f"{WORLD} GPUs ({rows[0]['distributed_type']})" if WORLD > 1 else "one GPU"
    say(f"\n### SFT throughput, {gpus}, {device}, {rows[0]['steps']} steps per row\n")
    say("| run | examples/step | non-padding tokens/s per GPU | through the decoder | MFU | peak memory GiB | "
        "x stock batch 32 | loss step 1 -> last |")
    say("|---|---|---|---|---|---|---|---|")
    base = next((r["tokens_per_s"] for r in rows if r["key"] == "stock32"), None)
    for r in rows:
        ratio = f"{r['tokens_per_s'] / base:.2f}" if base else "-"
        say(f"| {r['label']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['computed_tokens_per_s']:,.0f} | "
            f"{100 * r['mfu']:.1f}% | "
            f"{r['peak_mem_gib']:.1f} | {ratio} | {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} |")
    parity = {}
    by_key = {r["key"]: r for r in rows}
    for stock, fast in PARITY_PAIRS:
        if stock in by_key and fast in by_key:
            a, b = by_key[stock]["losses"], by_key[fast]["losses"]
            diffs = [abs(x - y) / x for x, y in zip(a, b)]
            tail = min(10, len(a))  # the mean of the last steps smooths the step-to-step bf16 noise
            tail_diff = abs(sum(a[-tail:]) - sum(b[-tail:])) / sum(a[-tail:])
            parity[f"{stock} vs {fast}"] = {"max_rel_diff": max(diffs), "last_steps_rel_diff": tail_diff,
                                            "pass": max(diffs) <= parity_tol}
            say(f"\nLoss parity, {by_key[stock]['label']} vs {by_key[fast]['label']} "
                f"(same examples per step, same learning rate):\n")
            say("| step | " + " | ".join(str(i + 1) for i in range(0, len(a), max(1, len(a) // 10))) + " |")
            say("|---|" + "---|" * len(range(0, len(a), max(1, len(a) // 10))))
            for name, c in ((stock, a), (fast, b)):
                say(f"| {name} | " + " | ".join(f"{c[i]:.3f}" for i in range(0, len(a), max(1, len(a) // 10))) + " |")
            say(f"\nmax relative difference over {len(a)} steps: {max(diffs):.4f} "
                f"({'PASS' if max(diffs) <= parity_tol else 'FAIL'} at tolerance {parity_tol}); mean of the last "
                f"{tail} steps: {sum(a[-tail:]) / tail:.4f} vs {sum(b[-tail:]) / tail:.4f} ({tail_diff:.4f})")
    return parity


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if DEVICE == "cuda":
        torch.cuda.set_device(LOCAL_RANK)  # before any model is built: each rank on its own GPU
    parser = TrlParser((BenchArguments, SFTScriptArguments, SFTConfig, ModelConfig),
                       description=" ".join(__doc__.split("\n\n")[0].split()), epilog=CONFIG_EPILOG)
    args, script_args, training_args, model_args = parser.parse_args_and_config(
        args=argv + ["--output_dir", tempfile.mkdtemp(), "--save_strategy", "no", "--logging_steps", "1000000",
                     "--report_to", "none", "--disable_tqdm", "true"])
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    start = time.perf_counter()
    _, _, dataset, counts, _, _ = load_model_and_data(script_args, training_args, model_args)
    say(f"D_qt examples: {counts}", flush=True)
    if DEVICE == "cuda":
        say(f"bf16 GEMM 8192x1536 @ 1536x8960: {matmul_tflops():.0f} TFLOP/s", flush=True)
    rows = []
    for key in args.rows.split(","):
        if time.perf_counter() - start > args.time_budget_s:
            say(f"skipping {key}: time budget spent", flush=True)
            continue
        say(f"--- {ROWS[key]['label']}", flush=True)
        try:
            rows.append(run_row(key, script_args, training_args, model_args, dataset, args.steps, args.warmup,
                                args.peak_tflops, args.batch, 3 if key in args.profile.split(",") else 0))
        except Exception as e:  # report the rows that ran; one failing variant must not hide the others
            say(f"row {key} failed: {type(e).__name__}: {e}", flush=True)
            gc.collect()
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
            continue
        r = rows[-1]
        say(f"    {r['tokens_per_s']:,.0f} tokens/s, MFU {100 * r['mfu']:.1f}%, peak {r['peak_mem_gib']:.1f} GiB, "
            f"{r['train_wall_s']:.0f} s in train()", flush=True)
        if args.out and RANK == 0:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"device": device, "rows": rows}, indent=1))
    parity = print_tables(rows, device, args.parity_tol) if rows else {}
    if args.out and RANK == 0:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"device": device, "torch": torch.__version__, "gpus": WORLD,
                                              "rows": rows, "parity": parity}, indent=1))
    say(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
