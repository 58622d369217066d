"""The recipe's fast path (`fast_path: true`) trains the same model as the stock SFTTrainer: same loss at every step
on CPU in float32 (packed rows with the dense document mask there; the flash varlen kernel is CUDA-only)."""

import json

import numpy as np

from tests.recipes.test_sft_recipe import _log_history, _run, workdir  # noqa: F401 (fixture)


def test_fast_path_loss_curve_equals_stock(workdir):  # noqa: F811
    curves = {}
    for name, fast in (("stock", False), ("fast", True)):
        proc = _run(workdir, f"parity_{name}", max_steps=6, save_steps=100, fast_path=fast)
        assert proc.returncode == 0, proc.stderr[-3000:]
        curves[name] = [h["loss"] for h in _log_history(workdir / f"parity_{name}") if "loss" in h]
    assert len(curves["fast"]) == 6 and curves["fast"][-1] < curves["fast"][0]
    np.testing.assert_allclose(curves["fast"], curves["stock"], rtol=2e-3)


def test_fast_path_on_two_ddp_processes_trains_like_one_process(workdir):  # noqa: F811
    """2 CPU processes (gloo DDP) x 3 chats per step = 1 process x 6: the same loss at every step, so the answer-token
    count is global and the gradients are averaged right (the multi-GPU path, without the GPUs). With 6 training
    chats and a step of 6, every step sees all of them whatever order the samplers draw."""
    rows = [json.loads(line) for line in (workdir / "dqt.jsonl").read_text().splitlines()]
    keep = [r for r in rows if r["split"] == "train"][:6]
    (workdir / "dqt6.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    curves = {}
    for name, processes, batch in (("one", 1, 6), ("two", 2, 3)):
        proc = _run(workdir, f"ddp_{name}", processes=processes,
                    max_steps=4, save_steps=100, fast_path=True, per_device_train_batch_size=batch,
                    dqt_path=str(workdir / "dqt6.jsonl"), dataloader_drop_last=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        curves[name] = [h["loss"] for h in _log_history(workdir / f"ddp_{name}") if "loss" in h]
    assert len(curves["two"]) == 4 and curves["two"][-1] < curves["two"][0]
    np.testing.assert_allclose(curves["two"], curves["one"], rtol=2e-3)
