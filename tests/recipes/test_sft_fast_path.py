"""The recipe's fast path (`fast_path: true`) trains the same model as the stock SFTTrainer: same loss at every step
on CPU in float32 (packed rows with the dense document mask there; the flash varlen kernel is CUDA-only)."""

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
