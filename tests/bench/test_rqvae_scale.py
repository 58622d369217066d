"""bench/rqvae_scale.py's grouped model is the repo's RQ-VAE: same losses and gradients as each model alone."""

import importlib.util
from pathlib import Path

import torch

from tokenizer_ext.rqvae import RQVAE

_spec = importlib.util.spec_from_file_location("rqvae_scale", Path(__file__).resolve().parents[2] / "bench" / "rqvae_scale.py")
rqvae_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rqvae_scale)


def test_grouped_rqvae_equals_each_model_alone():
    dims, batch, d_pad = [18, 30, 7], 64, 32
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, d, generator=g) for d in dims]
    models = []
    for i, d in enumerate(dims):
        torch.manual_seed(i)
        m = RQVAE(d, codebook_sizes=(4, 8)).train()
        with torch.no_grad():
            m.quantizer.init_codebooks(m.encoder(xs[i]), 5, torch.Generator().manual_seed(i))
        models.append(m)
    grouped = rqvae_scale.GroupedRQVAE(models, d_pad).train()
    x = torch.stack([torch.nn.functional.pad(xi, (0, d_pad - xi.shape[1])) for xi in xs])  # [G, B, d_pad]
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
