"""bench/rqvae_scale.py's grouped model is the repo's RQ-VAE: same losses and gradients as each model alone."""

import importlib.util
from pathlib import Path

import torch

from tokenizer_ext.rqvae import RQVAE

_spec = importlib.util.spec_from_file_location("rqvae_scale", Path(__file__).resolve().parents[2] / "bench" / "rqvae_scale.py")
rqvae_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rqvae_scale)


def _grouped_setup(dims=(18, 30, 7), batch=64, d_pad=32, seed=1):
    """Three RQ-VAEs of different input widths (codebooks initialised on their batch) -> (models, rows per model,
    the rows zero-padded and stacked [G, B, d_pad], d_pad)."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(batch, d, generator=g) for d in dims]
    models = []
    for i, d in enumerate(dims):
        torch.manual_seed(i)
        m = RQVAE(d, codebook_sizes=(4, 8)).train()
        with torch.no_grad():
            m.quantizer.init_codebooks(m.encoder(xs[i]), 5, torch.Generator().manual_seed(i))
        models.append(m)
    x = torch.stack([torch.nn.functional.pad(xi, (0, d_pad - xi.shape[1])) for xi in xs])  # [G, B, d_pad]
    return models, xs, x, d_pad


def test_grouped_rqvae_equals_each_model_alone():
    models, xs, x, d_pad = _grouped_setup(seed=0)
    dims = [xi.shape[1] for xi in xs]
    grouped = rqvae_scale.GroupedRQVAE(models, d_pad).train()
    total, per_model = grouped(x)
    total.backward()
    for i, (m, xi) in enumerate(zip(models, xs)):
        out = m(xi)
        out.loss.backward()
        assert torch.allclose(per_model[i], out.loss.detach(), atol=1e-5), (i, per_model[i], out.loss)
        assert torch.allclose(grouped.encoder[0].weight.grad[i, :, :dims[i]], m.encoder[0].weight.grad, atol=1e-5)
        assert torch.all(grouped.encoder[0].weight.grad[i, :, dims[i]:] == 0)  # padded inputs: no gradient
        assert torch.allclose(grouped.decoder[-1].weight.grad[i, :dims[i]], m.decoder[-1].weight.grad, atol=1e-5)
        assert torch.allclose(grouped.codebooks[1].grad[i], m.quantizer.codebooks[1].grad, atol=1e-5)
        assert torch.allclose(grouped.encoder[1].running_mean[i], m.encoder[1].running_mean, atol=1e-6)


def test_bf16_matmul_operands_keep_float32_parameters_and_train_alike():
    """bf16 operands round every product and the gradients flowing back (as autocast does): the loss curves of 40
    AdamW steps at the paper's lr stay within bf16 noise of the float32 model's."""
    models, _, x, d_pad = _grouped_setup(batch=256)
    xb = x.bfloat16()  # the text group's data is stored in bf16; both models read the same rounded rows
    curves = []
    for dtype in (torch.float32, torch.bfloat16):
        m = rqvae_scale.GroupedRQVAE(models, d_pad, matmul_dtype=dtype).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            total, per_model = m(xb if dtype == torch.bfloat16 else xb.float())
            total.backward()
            opt.step()
            losses.append(per_model)
        assert all(p.dtype == torch.float32 for p in m.parameters())  # the optimizer updates float32 weights
        curves.append(torch.stack(losses))  # [steps, G]
    ref, low = curves
    assert torch.allclose(low[0], ref[0], rtol=5e-3), (low[0], ref[0])
    assert ((low - ref).abs() / ref).max() < 3e-2
    assert (ref[-1] < ref[0]).all() and (low[-1] < low[0]).all()


def test_group_trainer_epoch_takes_every_row_once_per_model():
    models, _, _, d_pad = _grouped_setup(batch=16)
    data = torch.randn(3, 96, d_pad)
    tr = rqvae_scale.GroupTrainer(["a", "b", "c"], data, models, batch=16, lr=1e-3, weight_decay=0.0,
                                  use_graph=False, device=torch.device("cpu"))
    seen = []
    step = tr._step
    tr._step = lambda k=0: (seen.append(tr.idx[k].clone()), step(k))
    assert tr.epoch() == 6 and len(seen) == 6
    rows = torch.cat(seen, dim=1)  # [G, 96]: one shuffled pass per model
    assert all(sorted(r.tolist()) == list(range(96)) for r in rows)
    assert not torch.equal(rows[0], rows[1])  # per-model shuffles
    assert torch.isfinite(tr.loss_sum).all() and (tr.loss_sum > 0).all()
