"""Grouped RQ-VAE training (tokenizer_ext/quantizers/rqvae_grouped.py) is the repo's RQ-VAE: same losses and
gradients as each model alone, weights copied back exactly, per-model shuffles over each model's own rows, and
train_grouped fits RQVAEQuantizers that save, load and encode like per-modality ones."""

import numpy as np
import pytest
import torch

from tokenizer_ext.quantizers.rqvae import RQVAEQuantizer
from tokenizer_ext.quantizers.rqvae_grouped import GroupedRQVAE, GroupTrainer, run_epoch, train_grouped, width_groups
from tokenizer_ext.quantizers.rqvae_model import RQVAE


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
    grouped = GroupedRQVAE(models, d_pad).train()
    total, stats, codes = grouped(x)
    per_model = stats[:, 0]
    assert codes.shape == (len(models), x.shape[1], 2)
    total.backward()
    for i, (m, xi) in enumerate(zip(models, xs)):
        out = m(xi)
        out.loss.backward()
        assert torch.allclose(per_model[i], out.loss.detach(), atol=1e-5), (i, per_model[i], out.loss)
        # grouped linear weights are stored [G, in, out]: nn.Linear's [out, in] transposed
        assert torch.allclose(grouped.encoder[0].weight.grad[i, :dims[i]].t(), m.encoder[0].weight.grad, atol=1e-5)
        assert torch.all(grouped.encoder[0].weight.grad[i, dims[i]:] == 0)  # padded inputs: no gradient
        assert torch.allclose(grouped.decoder[-1].weight.grad[i, :, :dims[i]].t(), m.decoder[-1].weight.grad,
                              atol=1e-5)
        assert torch.allclose(grouped.codebooks[1].grad[i], m.quantizer.codebooks[1].grad, atol=1e-5)
        assert torch.allclose(grouped.encoder[1].running_mean[i], m.encoder[1].running_mean, atol=1e-6)


def test_bf16_matmul_operands_keep_float32_parameters_and_train_alike():
    """bf16 operands round every product and the gradients flowing back (as autocast does): the loss curves of 40
    AdamW steps at the paper's lr stay within bf16 noise of the float32 model's."""
    models, _, x, d_pad = _grouped_setup(batch=256)
    xb = x.bfloat16()  # the text group's data is stored in bf16; both models read the same rounded rows
    curves = []
    for dtype in (torch.float32, torch.bfloat16):
        m = GroupedRQVAE(models, d_pad, matmul_dtype=dtype).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            total, stats, _ = m(xb if dtype == torch.bfloat16 else xb.float())
            total.backward()
            opt.step()
            losses.append(stats[:, 0])
        assert all(p.dtype == torch.float32 for p in m.parameters())  # the optimizer updates float32 weights
        curves.append(torch.stack(losses))  # [steps, G]
    ref, low = curves
    assert torch.allclose(low[0], ref[0], rtol=5e-3), (low[0], ref[0])
    assert ((low - ref).abs() / ref).max() < 3e-2
    assert (ref[-1] < ref[0]).all() and (low[-1] < low[0]).all()


def test_group_trainer_epoch_takes_every_row_once_per_model():
    models, _, _, d_pad = _grouped_setup(batch=16)
    data = torch.randn(3, 96, d_pad)
    tr = GroupTrainer(["a", "b", "c"], data, models, batch=16, lr=1e-3, weight_decay=0.0,
                                  use_graph=False, device=torch.device("cpu"))
    seen = []
    step = tr._step
    tr._step = lambda k=0: (seen.append(tr.idx[k].clone()), step(k))
    assert tr.epoch() == 6 and len(seen) == 6
    rows = torch.cat(seen, dim=1)  # [G, 96]: one shuffled pass per model
    assert all(sorted(r.tolist()) == list(range(96)) for r in rows)
    assert not torch.equal(rows[0], rows[1])  # per-model shuffles
    assert torch.isfinite(tr.loss_sum).all() and (tr.loss_sum[:, 0] > 0).all()
    stats = tr.read_stats()  # per model: mean loss terms over the epoch's steps, dead codes per level
    assert len(stats) == 3 and all(r["loss"] > 0 and len(r["dead_codes"]) == 2 for r in stats)
    assert all(0 <= d <= k for r in stats for d, k in zip(r["dead_codes"], (4, 8)))
    assert torch.all(tr.loss_sum == 0)  # read resets


def test_run_epoch_queues_the_groups_steps_in_turn_with_the_same_maths():
    def trainers(log=None):
        out = []
        for name, rows in (("wide", 96), ("small", 48)):  # 6 and 3 steps per epoch
            models, _, _, d_pad = _grouped_setup(batch=16)
            data = torch.randn(3, rows, d_pad, generator=torch.Generator().manual_seed(rows))
            tr = GroupTrainer([f"{name}{i}" for i in range(3)], data, models, batch=16, lr=1e-3, weight_decay=0.0,
                              use_graph=False, device=torch.device("cpu"), seed=rows)
            if log is not None:
                step = tr._step
                tr._step = lambda k=0, step=step, name=name: (log.append(name), step(k))
            out.append(tr)
        return out

    order = []
    together = trainers(order)
    assert run_epoch(together) == 6
    # in turn while both have steps left (one group's whole epoch first would serialise the GPU streams)
    assert order == ["wide", "small"] * 3 + ["wide"] * 3
    assert [tr.steps_since_read for tr in together] == [6, 3]
    alone = trainers()
    for tr in alone:
        tr.epoch()
    for a, b in zip(together, alone):  # the order of queuing changes no group's updates
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(pa, pb)
    assert run_epoch(together, max_steps=2) == 2


def test_models_with_fewer_rows_sample_only_their_own_rows():
    models, _, _, d_pad = _grouped_setup(batch=16)
    n_rows = [96, 40, 7]
    data = torch.randn(3, 96, d_pad)
    tr = GroupTrainer(["a", "b", "c"], data, models, batch=16, lr=1e-3, weight_decay=0.0, use_graph=False,
                      device=torch.device("cpu"), n_rows=n_rows, seed=3)
    seen = []
    step = tr._step
    tr._step = lambda k=0: (seen.append(tr.idx[k].clone()), step(k))
    assert tr.epoch() == 6  # the largest model's rows set the epoch
    rows = torch.cat(seen, dim=1)  # [G, 96]
    for g, n in enumerate(n_rows):
        assert int(rows[g].max()) < n  # never a padding row
        assert set(rows[g].tolist()) == set(range(n))  # every own row at least once
        assert rows[g][:n].unique().numel() == n  # the first n draws are one permutation


def test_unstack_puts_back_exactly_the_grouped_weights():
    models, xs, x, d_pad = _grouped_setup()
    grouped = GroupedRQVAE(models, d_pad).train()
    opt = torch.optim.AdamW(grouped.parameters(), lr=1e-2)
    for _ in range(3):  # move the grouped weights away from the models'
        opt.zero_grad()
        grouped(x)[0].backward()
        opt.step()
    grouped.unstack_into(models)
    total, stats, _ = grouped(x)
    for g, (m, xi) in enumerate(zip(models, xs)):
        m.train()
        out = m(xi)  # the unstacked model alone, same batch: the grouped model's numbers for this model
        assert torch.allclose(out.loss, stats[g, 0], atol=1e-5), (g, out.loss, stats[g, 0])
        assert torch.allclose(out.recon, stats[g, 1], atol=1e-5)


def test_width_groups_put_wide_inputs_alone_and_narrow_ones_together():
    groups = width_groups({"AC": 4096, "BM": 4096, "SC": 128, "MC": 247, "RI": 18, "X": 384})
    assert sorted(map(sorted, groups)) == [["AC", "BM"], ["MC", "RI", "SC"], ["X"]]


def _clustered(n, d, seed):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(8, d))
    return (centres[g.integers(0, 8, n)] + 0.1 * g.normal(size=(n, d))).astype(np.float32)


def test_train_grouped_fits_quantizers_that_save_load_and_encode(tmp_path):
    dims, rows = {"A": 300, "B": 300, "C": 24, "D": 9}, {"A": 256, "B": 200, "C": 256, "D": 130}
    both = {m: _clustered(rows[m] + 40, d, i) for i, (m, d) in enumerate(dims.items())}  # same clusters
    x, xv = {m: v[:rows[m]] for m, v in both.items()}, {m: v[rows[m]:] for m, v in both.items()}
    kw = dict(codebook_sizes=(4, 8), hidden_dims=(32, 16), d_z=8, batch_size=64, epochs=15, lr=3e-3, seed=0,
              kmeans_init_iters=5, device="cpu", standardize=True)
    quantizers = {m: RQVAEQuantizer(**kw) for m in dims}
    logs = {m: [] for m in dims}
    train_grouped(quantizers, x, x_val=xv, log={m: logs[m].append for m in dims})
    for m, q in quantizers.items():
        assert [r["epoch"] for r in logs[m]] == list(range(1, 16))
        assert logs[m][-1]["loss"] < logs[m][0]["loss"], (m, logs[m][0], logs[m][-1])
        assert logs[m][-1]["val_recon"] is not None and all(r["val_recon"] is None for r in logs[m][:-1])
        codes = q.encode(x[m])
        assert codes.shape == (rows[m], 2) and codes[:, 0].max() < 4 and codes[:, 1].max() < 8
        q.save(tmp_path / m)
        again = RQVAEQuantizer.load(tmp_path / m, device="cpu")
        np.testing.assert_array_equal(again.encode(x[m]), codes)
        # the tokens keep what a per-modality fit of the same configuration keeps (held-out reconstruction)
        alone = RQVAEQuantizer(**kw)
        alone.fit(x[m], None)
        mse = q.reconstruction_mse(torch.as_tensor(xv[m]))
        assert mse < 1.5 * alone.reconstruction_mse(torch.as_tensor(xv[m])) and mse < 0.6 * xv[m].var(0).mean()


def test_train_grouped_rejects_mixed_configurations():
    q = {"A": RQVAEQuantizer(epochs=1, device="cpu"), "B": RQVAEQuantizer(epochs=2, device="cpu")}
    with pytest.raises(ValueError, match="one configuration"):
        train_grouped(q, {"A": np.zeros((4, 3), np.float32), "B": np.zeros((4, 3), np.float32)})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_gradients_come_out_in_the_parameters_layout(dtype):
    """Linear weights are stored [G, in, out], so their gradients need no layout copy: in float32 the backward copies
    no weight-shaped tensor, with bf16 operands only the cast of each weight's bf16 gradient back to float32."""
    models, _, x, d_pad = _grouped_setup(seed=0)
    grouped = GroupedRQVAE(models, d_pad, matmul_dtype=dtype).train()
    linears = [layer.weight for layers in (grouped.encoder, grouped.decoder) for layer in layers
               if layer.kind == "linear"]
    shapes = [list(w.shape) for w in linears]
    assert len(linears) == 8 and all(w.is_contiguous() for w in linears)
    loss = grouped(x)[0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    copies = [e.input_shapes[0] for e in prof.events()
              if e.name in ("aten::copy_", "aten::clone") and e.input_shapes and e.input_shapes[0] in shapes]
    assert len(copies) == (0 if dtype == torch.float32 else len(shapes))


def _max_weight_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two fits' weights, over every modality's floating-point tensors."""
    return max((x - y).abs().max().item() for m in a
               for x, y in zip(a[m].model.state_dict().values(), b[m].model.state_dict().values())
               if torch.is_tensor(x) and x.is_floating_point())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs: the optimizer state is restored in place (no GPU here)"))])
def test_a_killed_grouped_run_resumes_from_its_state_with_the_weights_of_an_uninterrupted_run(tmp_path, device):
    dims, rows = {"A": 300, "C": 24, "D": 9}, {"A": 256, "C": 200, "D": 130}
    x = {m: _clustered(rows[m], d, i) for i, (m, d) in enumerate(dims.items())}
    kw = dict(codebook_sizes=(4, 8), hidden_dims=(32, 16), d_z=8, batch_size=64, epochs=6, lr=3e-3, seed=0,
              kmeans_init_iters=5, device=device, standardize=True)
    state = tmp_path / "grouped_state.pt"

    def fit(kill_at=None, inputs="v1"):
        quantizers, logs = {m: RQVAEQuantizer(**kw) for m in dims}, {m: [] for m in dims}

        def logger(m):
            def log(record):
                if record["epoch"] == kill_at and m == "D":
                    raise KeyboardInterrupt  # killed after epoch 5's weights, before its state could be written
                logs[m].append(record)
            return log
        train_grouped(quantizers, x, log={m: logger(m) for m in dims}, state_path=state, state_every=2,
                      state_key={m: f"embeddings of {m}, {inputs}" for m in dims})
        return quantizers, logs

    whole, whole_logs = fit()
    assert not state.exists()  # removed once the run is done
    # GPU kernels (atomic adds) differ between two uninterrupted runs: their difference is the yardstick there
    noise = 0.0 if device == "cpu" else _max_weight_diff(fit()[0], whole)
    with pytest.raises(KeyboardInterrupt):
        fit(kill_at=5)
    saved = torch.load(state, weights_only=False, map_location="cpu")
    assert saved["epoch"] == 4  # the last state written before the kill
    resumed, resumed_logs = fit()
    assert [r["epoch"] for r in resumed_logs["A"]] == list(range(1, 7))
    if device == "cpu":
        assert resumed_logs == whole_logs
    for m in dims:  # bitwise on the CPU; on a GPU as close as a second uninterrupted run (an H200: 0.011 vs 0.013)
        for got, want in zip(resumed_logs[m], whole_logs[m]):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=0), (m, got, want)
    tol = dict(rtol=0, atol=2 * noise)
    assert _max_weight_diff(resumed, whole) <= tol["atol"]
    # a state saved by other settings (here with shifted weights) is not used
    shifted = [{**t, "model": {k: v + 1 if v.is_floating_point() else v for k, v in t["model"].items()}}
               for t in saved["trainers"]]
    for other, inputs in (({"data_dtype": "bfloat16"}, "v1"), ({}, "v2")):  # other settings; other embeddings
        torch.save({**saved, "trainers": shifted, "key": {**saved["key"], **other}}, state)
        again, _ = fit(inputs=inputs)
        torch.testing.assert_close(again["A"].model.state_dict()["encoder.0.weight"],
                                   whole["A"].model.state_dict()["encoder.0.weight"], **tol)


@pytest.mark.parametrize("rows, expected", [(0, 64), (100, 100), (-1, 256)])
def test_kmeans_init_rows_sets_how_many_rows_the_codebook_init_clusters(monkeypatch, rows, expected):
    """Both training paths (per modality, grouped) hand the codebooks' k-means the latents of the same rows: one batch
    by default (64 > the largest codebook), N rows, or every training row."""
    from tokenizer_ext.quantizers.rqvae_model import ResidualQuantizer

    seen, original = [], ResidualQuantizer.init_codebooks
    monkeypatch.setattr(ResidualQuantizer, "init_codebooks",
                        lambda self, z, iters, gen: seen.append(len(z)) or original(self, z, iters, gen))
    x = _clustered(256, 12, 0)
    kw = dict(codebook_sizes=(4, 8), hidden_dims=(16,), d_z=4, batch_size=64, epochs=1, seed=0, kmeans_init_iters=3,
              kmeans_init_rows=rows, device="cpu")
    alone, grouped = RQVAEQuantizer(**kw), RQVAEQuantizer(**kw)
    alone.fit(x, None)
    train_grouped({"A": grouped}, {"A": x})
    assert seen == [expected, expected]
    assert RQVAEQuantizer(kmeans_init_rows=rows).settings["kmeans_init_rows"] == rows
    with pytest.raises(ValueError, match="kmeans_init_rows=-2"):
        RQVAEQuantizer(kmeans_init_rows=-2)
