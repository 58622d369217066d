"""Several RQ-VAEs trained together as one grouped model: the GPU fast path of per-modality tokenizer training.

Each per-modality RQ-VAE is small, so its GPU step is launch latency, not arithmetic. Modalities of similar input
width form a group whose layers are batched matmuls (`GroupedRQVAE`: per-model weights, BatchNorm statistics,
codebooks and losses, the maths of each RQVAE alone); data, shuffling and loss sums stay on the device, and on CUDA
each group's step is one CUDA graph, replayed on the group's own stream, the groups' replays queued in turn
(`run_epoch`) so that the streams overlap. `train_grouped` trains a list of `RQVAEQuantizer`s this way (the recipe's
`grouped: true`); afterwards each quantizer saves, loads and encodes as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenizer_ext.quantizers.rqvae import RQVAEQuantizer
from tokenizer_ext.quantizers.rqvae_model import RQVAE

STATS = ("loss", "recon", "codebook", "commitment")


class GroupedRQVAE(nn.Module):
    """G RQ-VAEs (rqvae_model.RQVAE) as one module: x [G, B, d_pad] -> summed loss; per-model maths unchanged.

    Inputs narrower than d_pad are zero-padded: the zero columns add nothing to the encoder, and the decoder's padded
    outputs are masked out of the reconstruction loss (mean over the model's own d_in), so each model trains exactly
    as alone; the padded weights receive no gradient. matmul_dtype=bfloat16: the products read bf16 operands
    (parameters, BatchNorm, the codebook search and the losses stay float32)."""

    def __init__(self, models: list[RQVAE], d_pad: int, matmul_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.matmul_dtype = matmul_dtype
        self.d_in = [m.encoder[0].in_features for m in models]
        self.beta = models[0].beta
        self.register_buffer("mask", torch.stack([(torch.arange(d_pad) < d).float() for d in self.d_in]))  # [G, d_pad]
        self.register_buffer("d_in_t", torch.tensor(self.d_in, dtype=torch.float32))  # no host copy in a CUDA graph
        self.encoder = self._stack([m.encoder for m in models], d_pad, pad_input=True)
        self.decoder = self._stack([m.decoder for m in models], d_pad, pad_input=False)
        levels = range(len(models[0].quantizer.codebooks))
        stacked = [torch.stack([m.quantizer.codebooks[i].detach() for m in models]) for i in levels]  # [G, K_l, d_z]
        self.codebooks = nn.ParameterList([nn.Parameter(c) for c in stacked])

    @staticmethod
    def _stack(mlps: list[nn.Sequential], d_pad: int, pad_input: bool) -> nn.ModuleList:
        layers = nn.ModuleList()
        n = len(mlps[0])
        for i in range(n):
            mods = [mlp[i] for mlp in mlps]
            layer = nn.Module()
            if isinstance(mods[0], nn.Linear):
                w = [m.weight.detach() for m in mods]
                if pad_input and i == 0:
                    w = [F.pad(x, (0, d_pad - x.shape[1])) for x in w]
                b = [m.bias.detach() for m in mods]
                if not pad_input and i == n - 1:
                    w = [F.pad(x, (0, 0, 0, d_pad - x.shape[0])) for x in w]
                    b = [F.pad(x, (0, d_pad - x.shape[0])) for x in b]
                layer.kind = "linear"
                # stored [G, in, out] (nn.Linear's weight transposed): h @ weight needs no transpose, so the weight's
                # gradient comes out in the parameter's own layout and autograd does not copy it into that layout
                layer.weight = nn.Parameter(torch.stack(w).transpose(1, 2).contiguous())  # [G, in, out]
                layer.bias = nn.Parameter(torch.stack(b))                                  # [G, out]
            elif isinstance(mods[0], nn.BatchNorm1d):
                layer.kind, layer.eps, layer.momentum = "bn", mods[0].eps, mods[0].momentum
                layer.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]))
                layer.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods]))
                layer.register_buffer("running_mean", torch.stack([m.running_mean for m in mods]))
                layer.register_buffer("running_var", torch.stack([m.running_var for m in mods]))
            else:
                layer.kind = "relu"
            layers.append(layer)
        return layers

    @torch.no_grad()
    def unstack_into(self, models: list[RQVAE]) -> None:
        """Copy the trained weights, BatchNorm statistics and codebooks back into the G models (padding dropped)."""
        for g, m in enumerate(models):
            d = self.d_in[g]
            for stacked, mlp, is_encoder in ((self.encoder, m.encoder, True), (self.decoder, m.decoder, False)):
                last = len(mlp) - 1
                for i, (layer, mod) in enumerate(zip(stacked, mlp)):
                    if layer.kind == "linear":
                        w, b = layer.weight[g].t(), layer.bias[g]  # [out, in] as nn.Linear
                        if is_encoder and i == 0:
                            w = w[:, :d]
                        if not is_encoder and i == last:
                            w, b = w[:d], b[:d]
                        mod.weight.copy_(w)
                        mod.bias.copy_(b)
                    elif layer.kind == "bn":
                        mod.weight.copy_(layer.weight[g])
                        mod.bias.copy_(layer.bias[g])
                        mod.running_mean.copy_(layer.running_mean[g])
                        mod.running_var.copy_(layer.running_var[g])
                        mod.num_batches_tracked.zero_()  # unused with a fixed momentum
            for level, cb in enumerate(self.codebooks):
                m.quantizer.codebooks[level].copy_(cb[g])

    def _mlp(self, layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            if layer.kind == "linear":
                if self.matmul_dtype == torch.float32:
                    h = torch.baddbmm(layer.bias.unsqueeze(1), h.float(), layer.weight)  # [G, B, out]
                else:  # parameters stay float32 (the optimizer's copy); the product runs on bf16 operands
                    w = layer.weight.to(self.matmul_dtype)
                    h = torch.bmm(h.to(self.matmul_dtype), w).float() + layer.bias.unsqueeze(1)
            elif layer.kind == "bn":  # BatchNorm1d in training mode, per model
                mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
                if self.training:
                    with torch.no_grad():
                        n = h.shape[1]
                        layer.running_mean.lerp_(mean.squeeze(1), layer.momentum)
                        layer.running_var.lerp_(var.squeeze(1) * n / (n - 1), layer.momentum)
                h = (h - mean) * torch.rsqrt(var + layer.eps) * layer.weight.unsqueeze(1) + layer.bias.unsqueeze(1)
            else:
                h = F.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [G, B, d_pad] (any float dtype) -> (sum of the G models' losses, per-model [G, 4] loss / reconstruction /
        codebook / commitment (detached), codes int [G, B, L])."""
        z = self._mlp(self.encoder, x)                                        # [G, B, d_z]
        r, z_q, codebook, commitment, codes = z, torch.zeros_like(z), 0.0, 0.0, []
        for cb in self.codebooks:                                             # [G, K, d_z]
            k = torch.cdist(r.detach(), cb.detach()).argmin(-1)               # [G, B]
            e = torch.gather(cb, 1, k.unsqueeze(-1).expand(-1, -1, cb.shape[-1]))  # [G, B, d_z], grad into cb
            codebook = codebook + (e - r.detach()).pow(2).mean((1, 2))
            commitment = commitment + (r - e.detach()).pow(2).mean((1, 2))
            z_q = z_q + e
            r = r - e.detach()
            codes.append(k)
        x_hat = self._mlp(self.decoder, z + (z_q - z).detach())               # straight-through
        recon = ((x_hat - x.float()).pow(2) * self.mask.unsqueeze(1)).sum((1, 2)) / (x.shape[1] * self.d_in_t)
        per_model = recon + codebook + self.beta * commitment                 # [G]
        stats = torch.stack([per_model, recon, codebook, self.beta * commitment], dim=1).detach()
        return per_model.sum(), stats, torch.stack(codes, dim=-1)


class GroupTrainer:
    """One group of modalities on one device: data [G, n_max, d_pad] (model g's rows are the first n_rows[g]),
    the grouped model, fused AdamW, optionally one CUDA graph per step (or per `steps_per_graph` steps)."""

    def __init__(self, names: list[str], data: torch.Tensor, models: list[RQVAE], batch: int, lr: float,
                 weight_decay: float, use_graph: bool, device: torch.device, compile_model: bool = False,
                 matmul_dtype: torch.dtype = torch.float32, steps_per_graph: int = 1,
                 n_rows: list[int] | None = None, seed: int = 0):
        self.names, self.data, self.batch, self.device = names, data, batch, device
        self.n_rows = torch.tensor(n_rows or [data.shape[1]] * len(names), device=device)  # [G]
        if int(self.n_rows.min()) < 1:
            raise ValueError(f"group {names}: a model without training rows")
        self.n_max = int(self.n_rows.max())
        self.k = steps_per_graph if use_graph else 1  # optimizer steps captured in one graph (fewer replays)
        self.model = GroupedRQVAE(models, data.shape[2], matmul_dtype).to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay,
                                     fused=device.type == "cuda", capturable=use_graph)
        self.gen = torch.Generator(device=device).manual_seed(seed)  # the per-epoch shuffles
        self.g_idx = torch.arange(len(names), device=device).unsqueeze(1)  # [G, 1]
        self.idx = torch.zeros(self.k, len(names), batch, dtype=torch.long, device=device)  # static batch indices
        self.loss_sum = torch.zeros(len(names), len(STATS), device=device)  # per model: loss, recon, codebook, commit
        self.usage = [torch.zeros(len(names), cb.shape[1], dtype=torch.long, device=device)
                      for cb in self.model.codebooks]
        self.steps_since_read = 0
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graph = None
        # torch.compile fuses the many small element-wise kernels (BatchNorm, losses) of this launch-bound step
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.compiled = compile_model
        if use_graph:
            try:
                self._capture()
            except Exception as e:  # report it; retry without compile, then run the step without a graph
                print(f"CUDA graph capture failed for {names} (compile={self.compiled}): {type(e).__name__}: "
                      f"{str(e)[:300]}", flush=True)
                torch.cuda.synchronize()
                self.graph = None
                if self.compiled:
                    self.forward, self.compiled = self.model, False
                    try:
                        self._capture()
                    except Exception as e2:
                        print(f"CUDA graph capture failed again, eager steps: {type(e2).__name__}", flush=True)
                        self.graph = None
                        torch.cuda.synchronize()

    def _step(self, k: int = 0) -> None:
        x = self.data[self.g_idx, self.idx[k]]                                       # [G, B, d], stored dtype
        loss, stats, codes = self.forward(x)
        loss.backward()
        self.opt.step()
        self.loss_sum += stats
        for level, usage in enumerate(self.usage):
            usage.scatter_add_(1, codes[..., level], torch.ones_like(codes[..., level]))

    def _capture(self) -> None:
        initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.idx.copy_(torch.randint(self.n_max, self.idx.shape, device=self.device) % self.n_rows[None, :, None])
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up steps (real updates) before capture, as torch.cuda.graphs requires
            for _ in range(3):
                self.opt.zero_grad(set_to_none=True)
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            for k in range(self.k):
                if k:
                    self.opt.zero_grad(set_to_none=False)  # in-graph: the next step's backward must not accumulate
                self._step(k)  # the first backward of a replay writes fresh grads (captured with grads None)
        # the warm-up steps updated the weights: back to the initial model and a fresh optimizer, in place (the graph
        # holds these tensors' addresses), so training starts where an eager run would
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(initial[k])
            for state in self.opt.state.values():
                for t in state.values():
                    if torch.is_tensor(t):
                        t.zero_()
        self.reset_stats()
        if self.stream is not None:  # the replays run on the group's stream: after the restore
            self.stream.wait_stream(torch.cuda.current_stream())

    def steps_per_epoch(self) -> int:
        steps = max(self.n_max // self.batch, 1)
        return max(steps - steps % self.k, self.k)

    def epoch(self, max_steps: int | None = None) -> int:
        """One shuffled pass over the largest model's rows (or max_steps steps), queued on this group's stream
        without a host sync -> steps."""
        return sum(self.epoch_steps(max_steps))

    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def epoch_steps(self, max_steps: int | None = None) -> Iterator[int]:
        """The epoch of `epoch`, one replay (k optimizer steps) queued per iteration -> k each time. The stream is
        entered per replay, so several groups' generators can be advanced in turn (run_epoch)."""
        steps = self.steps_per_epoch() if max_steps is None else min(max_steps, self.steps_per_epoch())
        steps -= steps % self.k  # whole replays
        g = len(self.names)
        with self._on_stream():
            # per model: a permutation of its own rows first (the padding rows sort last), wrapped to fill the epoch
            keys = torch.rand(g, self.n_max, device=self.device, generator=self.gen)
            keys += (torch.arange(self.n_max, device=self.device) >= self.n_rows[:, None]).float() * 2
            perm = torch.argsort(keys, dim=1)                                          # [G, n_max]
            pos = torch.arange(steps * self.batch, device=self.device) % self.n_rows[:, None]
            order = torch.gather(perm, 1, pos)                                         # [G, steps * B]
        span = self.k * self.batch
        for s in range(0, steps, self.k):
            with self._on_stream():
                block = order[:, s * self.batch:s * self.batch + span]                 # [G, k * B]
                self.idx.copy_(block.view(g, self.k, self.batch).transpose(0, 1))
                if self.graph is not None:
                    self.graph.replay()
                else:
                    for k in range(self.k):
                        self.opt.zero_grad(set_to_none=True)
                        self._step(k)
            self.steps_since_read += self.k
            yield self.k

    def state(self) -> dict:
        """What a resumed run needs, read between epochs: the stacked weights, the optimizer and the shuffles'
        generator."""
        if self.stream is not None:
            torch.cuda.current_stream().wait_stream(self.stream)
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "opt": self.opt.state_dict(), "gen": self.gen.get_state()}

    def load_state(self, state: dict) -> None:
        """Restore state() in place: a captured CUDA graph keeps the addresses of these tensors."""
        with torch.no_grad():
            self.model.load_state_dict(state["model"])  # copies into the existing parameters and buffers
            params = [p for group in self.opt.param_groups for p in group["params"]]
            if params and all(self.opt.state.get(p) for p in params):  # captured: the moments exist already
                for i, p in enumerate(params):
                    for key, value in state["opt"]["state"][i].items():
                        if torch.is_tensor(self.opt.state[p][key]):
                            self.opt.state[p][key].copy_(value)
                        else:
                            self.opt.state[p][key] = value
            else:
                self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"].cpu())  # a generator's state is a CPU tensor, also for a CUDA generator

    def reset_stats(self) -> None:
        self.loss_sum.zero_()
        for usage in self.usage:
            usage.zero_()
        self.steps_since_read = 0

    def read_stats(self) -> list[dict]:
        """Per model since the last read: mean loss terms and dead codes per level (one device sync)."""
        if self.stream is not None:
            torch.cuda.current_stream().wait_stream(self.stream)
        means = (self.loss_sum / max(self.steps_since_read, 1)).tolist()
        dead = torch.stack([(u == 0).sum(1) for u in self.usage], dim=1).tolist()  # [G, L]
        self.reset_stats()
        return [{**dict(zip(STATS, means[g])), "dead_codes": dead[g]} for g in range(len(self.names))]


def run_epoch(trainers: list[GroupTrainer], max_steps: int | None = None) -> int:
    """One epoch of every group, their replays queued in turn (A, B, A, B, ...) -> the most steps of a group.

    Queuing one group's whole epoch before the next (thousands of replays) fills the GPU's launch queue, and the host
    then waits for the first group's work before it can queue the second's: the groups run one after the other on
    their streams. In turn, each stream always has work and the groups overlap."""
    runs = {i: tr.epoch_steps(max_steps) for i, tr in enumerate(trainers)}
    done = [0] * len(trainers)
    while runs:
        for i, it in list(runs.items()):
            step = next(it, None)
            if step is None:
                del runs[i]
            else:
                done[i] += step
    return max(done, default=0)


def width_groups(d_in: dict[str, int], small_width: int = 256) -> list[list[str]]:
    """Modalities -> groups trained together: every input width above small_width is its own group (the text
    modalities: 4096 in the paper); all narrower inputs form one group padded to the widest of them. (Smaller groups
    on more CUDA streams are slower: bench/rqvae_scale.py --variants bfloat16:1:K, docs/performance.md.)"""
    small = [m for m, d in d_in.items() if d <= small_width]
    wide: dict[int, list[str]] = {}
    for m, d in d_in.items():
        if d > small_width:
            wide.setdefault(d, []).append(m)
    return [g for g in ([*wide.values(), small]) if g]


Rows = np.ndarray | Callable[[], np.ndarray]  # an array, or a loader called once when the rows are needed


def _rows(x: Rows) -> np.ndarray:
    return x() if callable(x) else x


def train_grouped(quantizers: dict[str, RQVAEQuantizer], x_train: dict[str, Rows],
                  shapes: dict[str, tuple[int, int]] | None = None,
                  x_val: dict[str, Rows] | None = None, log: dict[str, Callable[[dict], None]] | None = None,
                  fast: bool | None = None, data_dtype: str = "float32", small_width: int = 256,
                  matmul_dtype: str = "float32", state_path: str | Path | None = None, state_every: int = 10,
                  state_key: dict | None = None) -> None:
    """Train every quantizer's RQVAE on its rows, grouped by input width (see the module docstring).

    The quantizers share one configuration (batch, epochs, lr, ...; each keeps its own seed-derived weights and its
    k-means codebook init on the first batch of its own shuffle, as RQVAEQuantizer.fit does). fast (default: on
    CUDA): torch.compile + CUDA graphs. data_dtype: the stored rows (bfloat16 halves the memory of wide inputs;
    the arithmetic is float32 unless matmuls are bf16). log[m] gets one record per epoch, like fit's (val_recon on
    the last epoch only). Rows may be loaders (`shapes` then gives each matrix's (rows, width)): one modality's rows
    are on the host at a time, so the host never holds all nine matrices (1.6M x 4096 float32 is 26 GB each).
    state_path: every `state_every` epochs the run's state (weights, optimizer, shuffles, the epoch records) is
    written there; a run killed in between resumes from it with the same inputs and settings (log gets the saved
    epochs' records again first), ending with the weights of an uninterrupted run; the file is removed at the end.
    state_key: what else identifies the inputs (the caller's fingerprint of each modality's embeddings); a state
    saved under another key or other settings is not used."""
    names = list(quantizers)
    first = quantizers[names[0]]
    shared = {k: v for k, v in first.settings.items() if k not in ("device",)}
    for m in names:
        other = {k: v for k, v in quantizers[m].settings.items() if k not in ("device",)}
        if other != shared:
            raise ValueError(f"grouped training needs one configuration for all modalities; {m} differs")
    if shared["dead_code_reset"]:
        raise ValueError("grouped training does not reset dead codes (dead_code_reset: false)")
    device = first.device
    fast = device.type == "cuda" if fast is None else fast
    dtype = getattr(torch, data_dtype)
    s = shared

    trainers = []
    shapes = shapes or {m: x_train[m].shape for m in names}
    for group in width_groups({m: shapes[m][1] for m in names}, small_width):
        n_rows = [shapes[m][0] for m in group]
        data = torch.zeros(len(group), max(n_rows), max(shapes[m][1] for m in group), dtype=dtype, device=device)
        models = []
        for g, m in enumerate(group):
            q = quantizers[m]
            x = torch.as_tensor(np.ascontiguousarray(_rows(x_train[m]), dtype=np.float32), device=device)
            if tuple(x.shape) != tuple(shapes[m]):
                raise ValueError(f"{m}: rows of shape {tuple(x.shape)}, announced {tuple(shapes[m])}")
            if len(x) < 2:
                raise ValueError(f"{m}: RQ-VAE needs at least 2 training rows (BatchNorm), got {len(x)}")
            if s["standardize"]:
                q._set_input_stats(x)
                x = q._to_model(x)
            model = q._build(x.shape[1])
            gen = torch.Generator().manual_seed(s["seed"])  # as fit: the first shuffle picks the k-means init rows
            perm = torch.randperm(len(x), generator=gen).to(device)
            q._init_codebooks(x, perm, gen)
            data[g, :len(x), :x.shape[1]] = x.to(dtype)
            models.append(model)
            del x
        trainers.append((group, models, GroupTrainer(
            group, data, models, s["batch_size"], s["lr"], s["weight_decay"], use_graph=fast and device.type == "cuda",
            device=device, compile_model=fast, matmul_dtype=getattr(torch, matmul_dtype), n_rows=n_rows,
            seed=s["seed"])))

    def val_recon(m: str) -> float | None:  # held-out rows of one modality at a time, after training
        if m not in (x_val or {}):
            return None
        v = _rows(x_val[m])
        return quantizers[m].reconstruction_mse(torch.as_tensor(np.ascontiguousarray(v, dtype=np.float32),
                                                                device=device)) if len(v) else None

    key = {"settings": shared, "shapes": {m: tuple(shapes[m]) for m in names}, "data_dtype": data_dtype,
           "matmul_dtype": matmul_dtype, "small_width": small_width, "inputs": state_key}
    records: dict[str, list[dict]] = {m: [] for m in names}
    start = _resume(state_path, key, [tr for _, _, tr in trainers], records, device)
    for m in names:  # the epochs of a resumed run, as they were logged before it was killed
        for record in records[m]:
            if log and m in log:
                log[m](record)
    for epoch in range(start, s["epochs"] + 1):
        run_epoch([tr for _, _, tr in trainers])  # each group on its stream, replays queued in turn: concurrent
        for group, models, tr in trainers:
            last = epoch == s["epochs"]
            if last:
                tr.model.unstack_into(models)
            for m, record in zip(group, tr.read_stats()):
                record = {"epoch": epoch, **record, "val_recon": val_recon(m) if last else None}
                records[m].append(record)
                if log and m in log:
                    log[m](record)
        if state_path and epoch % state_every == 0 and epoch < s["epochs"]:
            tmp = Path(state_path).with_suffix(".tmp")  # replaced in one step: a kill while writing keeps the last
            torch.save({"key": key, "epoch": epoch, "records": records,
                        "trainers": [tr.state() for _, _, tr in trainers]}, tmp)
            tmp.replace(state_path)
    if state_path:
        Path(state_path).unlink(missing_ok=True)
    for _group, models, tr in trainers:
        if s["epochs"] < 1:
            tr.model.unstack_into(models)
        for model in models:
            model.eval()


def _resume(state_path: str | Path | None, key: dict, trainers: list[GroupTrainer], records: dict[str, list[dict]],
            device: torch.device) -> int:
    """Load a saved state of the same run (same key) into the trainers and records -> the first epoch to train."""
    if not state_path or not Path(state_path).exists():
        return 1
    saved = torch.load(state_path, map_location=device, weights_only=False)
    if saved.get("key") != key:
        print(f"{state_path}: saved by a run with other inputs or settings; training from the start", flush=True)
        return 1
    for tr, state in zip(trainers, saved["trainers"]):
        tr.load_state(state)
    records.update(saved["records"])
    print(f"{state_path}: resuming after epoch {saved['epoch']}", flush=True)
    return saved["epoch"] + 1
