"""RQ-VAE / VQ-VAE on tiny tensors: shapes, the loss of Sec. 2, gradient paths, k-means init, dead codes, save/load."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from tokenizer_ext.quantizers.base import QUANTIZERS
from tokenizer_ext.quantizers.rqvae import RQVAEQuantizer, VQVAEQuantizer
from tokenizer_ext.quantizers.rqvae_model import RQVAE, ResidualQuantizer, code_usage, kmeans

SIZES = (4, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


def _model(d_in=20, d_z=4, sizes=SIZES, n=32):
    torch.manual_seed(0)
    model = RQVAE(d_in, d_z, hidden_dims=(16, 8), codebook_sizes=sizes)
    x = torch.randn(n, d_in)
    model.quantizer.init_codebooks(model.encoder(x), iters=5, generator=torch.Generator().manual_seed(0))
    return model, x


def _clusters(n_per=64, centers=None, noise=0.1, seed=0):
    """Rows around well-separated centers -> (x [n, d] float32, label [n])."""
    rng = np.random.default_rng(seed)
    centers = 10.0 * np.eye(4, dtype=np.float32) if centers is None else centers
    label = np.repeat(np.arange(len(centers)), n_per)
    x = centers[label] + noise * rng.standard_normal((len(label), centers.shape[1])).astype(np.float32)
    return x.astype(np.float32), label


def _grad_norm(params) -> float:
    return sum(0.0 if p.grad is None else float(p.grad.abs().sum()) for p in params)


def test_architecture_follows_appendix_b():
    model = RQVAE(d_in=20, d_z=4, hidden_dims=(16, 8), codebook_sizes=SIZES)
    kinds = [type(m) for m in model.encoder]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    enc = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in model.decoder if isinstance(m, nn.Linear)]
    assert enc == [(20, 16), (16, 8), (8, 4)] and dec == [(4, 8), (8, 16), (16, 20)]
    assert isinstance(model.decoder[-1], nn.Linear)  # no BatchNorm / ReLU on the output
    assert [tuple(c.shape) for c in model.quantizer.codebooks] == [(4, 4), (8, 4), (8, 4)]
    paper = RQVAE(d_in=128)
    assert [m.out_features for m in paper.encoder if isinstance(m, nn.Linear)] == [512, 256, 128, 32]
    assert paper.quantizer.codebook_sizes == (32, 64, 128) and paper.beta == 0.25
    with pytest.raises(RuntimeError, match="not initialised"):  # all-zero codebooks would give code 0 silently
        model(torch.randn(3, 20))


def test_forward_shapes_and_residual_chain():
    model, x = _model()
    out = model(x)
    q = out.quant
    assert out.x_hat.shape == (32, 20) and out.z.shape == (32, 4)
    assert q.codes.shape == (32, 3) and q.codes.dtype == torch.int64
    assert q.residuals.shape == (32, 3, 4) and q.codewords.shape == (32, 3, 4) and q.z_q.shape == (32, 4)
    assert (q.codes >= 0).all() and (q.codes < torch.tensor(SIZES)).all()
    torch.testing.assert_close(q.residuals[:, 0], out.z)  # r_1 = z
    for level, codebook in enumerate(model.quantizer.codebooks):
        torch.testing.assert_close(q.codewords[:, level], codebook[q.codes[:, level]])
        dist = torch.cdist(q.residuals[:, level], codebook)  # k_l = argmin_k ||r_l - e_k||
        torch.testing.assert_close(dist.gather(1, q.codes[:, level:level + 1]).squeeze(1), dist.min(1).values)
        if level + 1 < len(SIZES):  # r_{l+1} = r_l - e_l
            torch.testing.assert_close(q.residuals[:, level + 1], q.residuals[:, level] - q.codewords[:, level])
    torch.testing.assert_close(q.z_q, q.codewords.sum(1))
    torch.testing.assert_close(model.quantizer.lookup(q.codes), q.z_q)


def test_loss_terms_equal_hand_computation():
    model, x = _model()
    out = model(x)
    r, e = out.quant.residuals.detach(), out.quant.codewords.detach()
    recon = ((out.x_hat.detach() - x) ** 2).mean()
    codebook = sum(((r[:, level] - e[:, level]) ** 2).mean() for level in range(3))
    torch.testing.assert_close(out.recon.detach(), recon)
    torch.testing.assert_close(out.codebook.detach(), codebook)
    torch.testing.assert_close(out.commitment.detach(), 0.25 * codebook)
    torch.testing.assert_close(out.loss.detach(), recon + 1.25 * codebook)
    # the forward value of the decoder input is z_q (straight-through only changes the gradient)
    torch.testing.assert_close(out.x_hat.detach(), model.decoder(out.quant.z_q).detach())


def test_gradient_paths():
    model, x = _model()
    encoder, codebooks = list(model.encoder.parameters()), list(model.quantizer.codebooks)

    model.zero_grad(set_to_none=True)
    model(x).recon.backward()  # reaches the encoder through the straight-through estimator, not the codebooks
    assert _grad_norm(encoder) > 0 and _grad_norm(codebooks) == 0

    model.zero_grad(set_to_none=True)
    out = model(x)
    out.codebook.backward()  # moves only the selected codewords, never the encoder
    assert _grad_norm(encoder) == 0 and _grad_norm(codebooks) > 0
    for level, codebook in enumerate(codebooks):
        unused = torch.ones(len(codebook), dtype=torch.bool)
        unused[out.quant.codes[:, level]] = False
        assert float(codebook.grad[unused].abs().sum()) == 0

    model.zero_grad(set_to_none=True)
    model(x).commitment.backward()  # pulls the encoder toward its codewords, leaves codewords alone
    assert _grad_norm(encoder) > 0 and _grad_norm(codebooks) == 0


def test_kmeans_init_recovers_well_separated_clusters():
    x, label = _clusters()
    quantizer = ResidualQuantizer(4, SIZES)
    quantizer.init_codebooks(torch.from_numpy(x), iters=10, generator=torch.Generator().manual_seed(0))
    codes = quantizer(torch.from_numpy(x)).codes.numpy()
    per_cluster = [np.unique(codes[label == c, 0]) for c in range(4)]
    assert all(len(u) == 1 for u in per_cluster)  # each cluster -> one level-1 code
    assert len({int(u[0]) for u in per_cluster}) == 4  # ... and different clusters -> different codes
    for c, u in enumerate(per_cluster):  # level-1 codewords sit on the cluster centers
        assert np.linalg.norm(quantizer.codebooks[0][int(u[0])].detach().numpy() - 10.0 * np.eye(4)[c]) < 0.1


def test_kmeans_with_fewer_distinct_rows_than_codewords():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(5, 1)  # 15 rows, 3 distinct
    centroids = kmeans(x, 8, iters=5, generator=torch.Generator().manual_seed(0))
    assert centroids.shape == (8, 2)
    assert len(torch.unique(centroids, dim=0)) == 8  # no duplicate codewords
    for row in x[:3]:  # every distinct row is a codeword
        assert float(torch.cdist(row[None], centroids).min()) == 0.0
    const = kmeans(torch.zeros(10, 3), 4, iters=5, generator=torch.Generator().manual_seed(0))
    assert const.shape == (4, 3) and torch.isfinite(const).all()


def test_training_lowers_reconstruction_loss():
    centers = np.random.default_rng(1).normal(scale=3.0, size=(8, 20)).astype(np.float32)
    x, _ = _clusters(n_per=64, centers=centers, noise=0.3)
    logs = []
    quantizer = RQVAEQuantizer(d_z=4, hidden_dims=(32, 16), codebook_sizes=SIZES, lr=3e-3, batch_size=64,
                               epochs=15, device="cpu")
    quantizer.fit(x[::2], x[1::2], log=logs.append)
    assert [r["epoch"] for r in logs] == list(range(1, 16))
    assert set(logs[0]) == {"epoch", "loss", "recon", "codebook", "commitment", "dead_codes", "val_recon"}
    assert logs[-1]["recon"] < 0.5 * logs[0]["recon"]
    assert logs[-1]["val_recon"] < logs[0]["val_recon"]
    for r in logs:
        assert r["loss"] == pytest.approx(r["recon"] + r["codebook"] + r["commitment"], rel=1e-5)
        assert len(r["dead_codes"]) == 3 and all(0 <= d <= k for d, k in zip(r["dead_codes"], SIZES))
    codes = quantizer.encode(x)
    assert codes.shape == (len(x), 3) and codes.dtype == np.int64
    assert (codes >= 0).all() and (codes < np.array(SIZES)).all()
    assert quantizer.decode(codes).shape == x.shape


def test_dead_code_reporting_counts_unused_codes():
    quantizer = ResidualQuantizer(2, (4,))
    with torch.no_grad():
        quantizer.codebooks[0].copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]]))
    quantizer.initialized = True
    z = torch.tensor([[0.1, 0.0], [0.0, -0.1], [9.9, 0.2], [10.1, 0.0], [10.0, -0.3]])
    usage = code_usage(quantizer(z).codes, (4,))
    assert usage[0].tolist() == [2, 3, 0, 0]
    assert [int((u == 0).sum()) for u in usage] == [2]


def test_reset_dead_codes_moves_unused_codewords_onto_residuals():
    quantizer = ResidualQuantizer(2, (4, 4))
    with torch.no_grad():
        quantizer.codebooks[0].copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [90.0, 90.0], [99.0, -99.0]]))
        quantizer.codebooks[1].copy_(torch.tensor([[0.0, 0.0], [0.1, 0.0], [50.0, 50.0], [60.0, 60.0]]))
    quantizer.initialized = True
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    before = code_usage(quantizer(z).codes, (4, 4))
    assert [int((u == 0).sum()) for u in before] == [2, 2]
    quantizer.reset_dead_codes(z, before, torch.Generator().manual_seed(0))
    after = code_usage(quantizer(z).codes, (4, 4))
    assert [int((u == 0).sum()) for u in after] == [0, 0]


def test_dead_code_reset_in_training_leaves_no_dead_code():
    # batch 16 with 64 level-2 codewords: k-means init leaves level 3 only zero residuals -> many dead level-3 codes
    x = np.random.default_rng(2).standard_normal((1024, 20)).astype(np.float32)  # enough variety to use them all
    dead = {}
    for reset in (False, True):
        logs = []
        quantizer = RQVAEQuantizer(d_z=4, hidden_dims=(32, 16), codebook_sizes=(16, 64, 64), lr=1e-3, batch_size=16,
                                   epochs=4, dead_code_reset=reset, device="cpu")
        quantizer.fit(x, log=logs.append)
        dead[reset] = [r["dead_codes"] for r in logs]
        assert logs[-1]["val_recon"] is None
    assert dead[False][0][2] > 0 and dead[True][0] == dead[False][0]  # the same start
    assert sum(dead[False][-1]) > 0  # without reset they stay dead
    assert dead[True][-1] == [0, 0, 0]


def test_save_load_round_trip(tmp_path):
    x, _ = _clusters(n_per=32, noise=0.5)
    x = np.concatenate([x, x[:, :3]], axis=1)  # d_in 7
    quantizer = RQVAEQuantizer(d_z=4, hidden_dims=(16, 8), codebook_sizes=SIZES, lr=1e-3, batch_size=32,
                               epochs=3, seed=3, device="cpu")
    quantizer.fit(x)
    quantizer.save(tmp_path / "q")
    loaded = QUANTIZERS["rqvae"].load(tmp_path / "q")
    assert isinstance(loaded, RQVAEQuantizer) and loaded.codebook_sizes == SIZES and loaded.d_in == 7
    assert loaded.model.quantizer.initialized  # restored from the state dict: never re-initialised by k-means
    codes = quantizer.encode(x)
    np.testing.assert_array_equal(loaded.encode(x), codes)
    np.testing.assert_array_equal(loaded.decode(codes), quantizer.decode(codes))
    again = RQVAEQuantizer(d_z=4, hidden_dims=(16, 8), codebook_sizes=SIZES, lr=1e-3, batch_size=32, epochs=3,
                           seed=3, device="cpu")
    again.fit(x)  # same seed, same data -> the same codes
    np.testing.assert_array_equal(again.encode(x), codes)
    with pytest.raises(ValueError, match="not a vqvae checkpoint"):
        VQVAEQuantizer.load(tmp_path / "q")


def test_vqvae_is_one_level_of_1024():
    assert QUANTIZERS["vqvae"] is VQVAEQuantizer and QUANTIZERS["rqvae"] is RQVAEQuantizer
    assert VQVAEQuantizer().codebook_sizes == (1024,) and RQVAEQuantizer().codebook_sizes == (32, 64, 128)
    x = np.random.default_rng(0).standard_normal((300, 12)).astype(np.float32)
    quantizer = VQVAEQuantizer(d_z=4, hidden_dims=(16,), epochs=1, device="cpu")
    quantizer.fit(x)  # 300 rows < 1024 codewords: init must still give 1024 distinct codewords
    (codebook,) = quantizer.model.quantizer.codebooks
    assert codebook.shape == (1024, 4) and len(torch.unique(codebook.detach(), dim=0)) == 1024
    codes = quantizer.encode(x)
    assert codes.shape == (300, 1) and codes.min() >= 0 and codes.max() < 1024
    with pytest.raises(ValueError, match="one codebook"):
        VQVAEQuantizer(codebook_sizes=(4, 8))


def test_standardize_keeps_reconstruction_in_the_embedding_space_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 12)) * np.linspace(0.01, 3.0, 12)  # features on very different scales
    x = (centers[rng.integers(0, 4, 400)] + rng.normal(scale=0.01, size=(400, 12))).astype(np.float32)
    q = RQVAEQuantizer(d_z=4, hidden_dims=(16, 8), codebook_sizes=(4, 4), epochs=3, batch_size=64,
                       device="cpu", standardize=True)
    q.fit(x)
    np.testing.assert_allclose(q.mean.numpy(), x.mean(0), rtol=1e-4, atol=1e-5)
    x_hat = q.decode(q.encode(x))
    assert x_hat.shape == x.shape
    # decode maps back: the reconstruction error is measured against the raw rows, with the raw scale
    assert float(((x_hat - x) ** 2).mean()) == pytest.approx(q.reconstruction_mse(torch.as_tensor(x)), rel=1e-4)
    q.save(tmp_path / "q")
    back = RQVAEQuantizer.load(tmp_path / "q")
    np.testing.assert_array_equal(back.encode(x), q.encode(x))
    np.testing.assert_allclose(back.decode(q.encode(x)), x_hat, rtol=1e-5, atol=1e-6)


def test_global_standardize_scale_keeps_the_geometry_and_unit_mean_variance(tmp_path):
    """standardize_scale global: centred rows divided by one scale, so pairwise distances keep their ratios and the
    mean per-feature variance is 1; feature: each feature z-scored (the ratios change). Saved and loaded alike."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 6)) * np.array([0.01, 0.02, 0.05, 0.1, 0.5, 2.0])).astype(np.float32)
    kw = dict(d_z=4, hidden_dims=(8,), codebook_sizes=(4,), epochs=1, batch_size=64, device="cpu", standardize=True)
    dists = {}
    for scale in ("global", "feature"):
        q = RQVAEQuantizer(standardize_scale=scale, **kw)
        q.fit(x)
        z = q._to_model(torch.as_tensor(x)).numpy()
        assert float(z.var(axis=0, ddof=1).mean()) == pytest.approx(1.0, rel=1e-3)
        dists[scale] = np.linalg.norm(z[:50, None] - z[None, :50], axis=-1)
        q.save(tmp_path / scale)
        back = RQVAEQuantizer.load(tmp_path / scale)
        assert back.settings["standardize_scale"] == scale
        np.testing.assert_allclose(back.std.numpy(), q.std.numpy())
    raw = np.linalg.norm(x[:50, None] - x[None, :50], axis=-1)
    off = ~np.eye(50, dtype=bool)
    ratio = dists["global"][off] / raw[off]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)               # one scale: the geometry is kept
    assert np.ptp(dists["feature"][off] / raw[off]) > 1.0                  # per feature: it is not
    with pytest.raises(ValueError, match="standardize_scale='none'"):
        RQVAEQuantizer(standardize_scale="none")
