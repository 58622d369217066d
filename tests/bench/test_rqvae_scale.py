"""python -m bench.rqvae_scale end to end on the CPU at a toy size: the plain loop, the k-means baseline, the grouped
fast path (tokenizer_ext/quantizers/rqvae_grouped.py) and two variants run, and the JSON holds every figure of the
printed table."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_runs_every_path_and_reports_them(tmp_path):
    out = tmp_path / "rqvae.json"
    proc = subprocess.run([sys.executable, "-m", "bench.rqvae_scale", "--tracks", "1024", "--batch", "128",
                           "--epochs_measured", "1", "--plain_steps", "2", "--warmup", "1", "--plain_rows", "512",
                           "--init_kmeans_iters", "2", "--kmeans_iters", "2", "--no_graph", "--no-compile",
                           "--variants", "float32:1,bfloat16:1:2", "--variant_steps", "2", "--max_models", "3",
                           "--profile_ops", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert sorted(p["modality"] for p in r["plain"]) == sorted(r["modalities"]) and len(r["plain"]) == 9
    assert r["fast_measured_steps"] == 1024 // 128 and r["fast_150_s"] > 0 and r["kmeans_s"] > 0
    assert set(r["fast_mean_loss"]) == set(r["modalities"]) and all(v > 0 for v in r["fast_mean_loss"].values())
    assert [(v["matmul_dtype"], v["ms_per_step"] > 0) for v in r["variants"]] == [("float32", True), ("bfloat16", True)]
    # five 4096-wide and four narrow modalities: one group each, or runs of at most 2 (2+2+1, 2+2)
    assert [v["groups"] for v in r["variants"]] == [2, 5] and len(r["fast_graphs"]) == 4  # main run: 3+2, 3+1
    assert "| plain per-modality DataLoader loop |" in proc.stdout and "| bfloat16 | 1 | 5 |" in proc.stdout
    # the operator profile: every group, its operators with their input shapes (aten::bmm of the batched layers)
    assert len(r["profile_ops"]) == len(r["fast_graphs"]) == 4
    assert all("aten::bmm" in p["table"] and "[[" in p["table"] for p in r["profile_ops"].values())
