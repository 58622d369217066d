"""RQ-VAE of 3MToken (Sec. 2, App. B, D): one modality's embeddings float32 [n, d] <-> codes int [n, L].

    z   = f_theta(x)                         encoder MLP d -> 512 -> 256 -> 128 -> d_z (BatchNorm + ReLU)
    r_1 = z,  k_l = argmin_k ||r_l - e_k||^2,  r_{l+1} = r_l - e_{k_l}       L residual codebooks
    z_q = sum_l e_{k_l},  x_hat = g_phi(z_q)  decoder MLP d_z -> 128 -> 256 -> 512 -> d (mirrored)
    loss = ||x - x_hat||^2 + sum_l ( ||sg[r_l] - e_{k_l}||^2 + beta ||r_l - sg[e_{k_l}]||^2 )

(The paper numbers residuals from r_0 = z; here r_l is the input of level l, so r_1 = z.) Codebooks are
initialised by k-means on the first training batch (App. D, against codebook collapse), grown to one row per
codeword where a codebook is larger than a batch. The VQ-VAE baseline is the same model with one 1024-entry
codebook. `RQVAEQuantizer` / `VQVAEQuantizer` wrap the model in the ModalityQuantizer interface
(fit / encode / decode / save / load).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenizer_ext.base import ModalityQuantizer, register


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers through `dims`; BatchNorm1d + ReLU after every hidden layer, none on the output (App. B)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU()]
    return nn.Sequential(*layers)


def nearest(r: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """[B, d] rows, [K, d] codewords -> int64 [B] index of the closest codeword in Euclidean distance."""
    return torch.cdist(r, codebook).argmin(dim=1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator,
           jitter: torch.Tensor | None = None) -> torch.Tensor:
    """[n, d] rows -> [k, d] centroids: k-means++ seeding then `iters` Lloyd steps (CPU, seeded).

    When x has at most k distinct rows, every distinct row becomes a centroid and the remaining codewords are
    random rows plus Gaussian noise of std `jitter` [d] (default 1% of x's std): distinct, inside the data, and
    reported as dead if nothing ever picks them."""
    x = x.detach().float().cpu()
    distinct = torch.unique(x, dim=0)
    if len(distinct) <= k:
        extra = k - len(distinct)
        rows = distinct[torch.randint(len(distinct), (extra,), generator=generator)]
        scale = (0.01 * x.std(dim=0, unbiased=False) if jitter is None else jitter.cpu()).clamp_min(1e-6)
        return torch.cat([distinct, rows + scale * torch.randn(extra, x.shape[1], generator=generator)])
    # k-means++: each new centroid drawn with probability proportional to the squared distance to the nearest one
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    d2 = torch.cdist(x, centroids).squeeze(1) ** 2
    for _ in range(1, k):
        pick = torch.multinomial(d2, 1, generator=generator) if d2.sum() > 0 else \
            torch.randint(len(x), (1,), generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        d2 = torch.minimum(d2, torch.cdist(x, x[pick]).squeeze(1) ** 2)
    for _ in range(iters):
        onehot = F.one_hot(nearest(x, centroids), k).to(x.dtype)  # [n, k] cluster membership
        sums, counts = onehot.T @ x, onehot.sum(dim=0).unsqueeze(1)  # [k, d], [k, 1]
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # empty clusters stay put
    return centroids


@dataclass
class QuantizerOutput:
    codes: torch.Tensor      # int64 [B, L]  k_l per level
    residuals: torch.Tensor  # [B, L, d_z]   r_l, the input of level l (r_1 = z)
    codewords: torch.Tensor  # [B, L, d_z]   e_{k_l}, the selected codeword of level l
    z_q: torch.Tensor        # [B, d_z]      sum_l e_{k_l}


class ResidualQuantizer(nn.Module):
    """L codebooks in series, each quantizing what the previous levels left over."""

    def __init__(self, d_z: int, codebook_sizes: tuple[int, ...]):
        super().__init__()
        self.codebook_sizes = tuple(codebook_sizes)
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(k, d_z)) for k in self.codebook_sizes])
        self.initialized = False  # a Python flag (no GPU sync to read it), saved in the state dict as extra state

    def get_extra_state(self) -> dict:
        return {"initialized": self.initialized}

    def set_extra_state(self, state: dict) -> None:
        self.initialized = bool(state["initialized"])

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        """k-means on a batch of latents, level by level: level l clusters the residuals that levels < l leave."""
        r = z.detach()
        jitter = 0.01 * z.std(dim=0, unbiased=False)  # z's scale: later levels' residuals may all be 0
        for codebook in self.codebooks:
            codebook.copy_(kmeans(r, len(codebook), iters, generator, jitter).to(codebook))
            r = r - codebook[nearest(r, codebook)]
        self.initialized = True

    @torch.no_grad()
    def reset_dead_codes(self, z: torch.Tensor, usage: list[torch.Tensor], generator: torch.Generator) -> None:
        """Move every codeword with usage 0 onto a random residual of batch z (level by level, so that later
        levels see the residuals the reset earlier levels produce). Not in the paper; off by default."""
        r = z.detach()
        for codebook, counts in zip(self.codebooks, usage):
            dead = torch.nonzero(counts == 0).squeeze(1)
            if len(dead):
                replace = len(dead) > len(r)
                rows = (torch.randint(len(r), (len(dead),), generator=generator) if replace
                        else torch.randperm(len(r), generator=generator)[:len(dead)])
                codebook[dead.to(codebook.device)] = r[rows.to(r.device)]
            r = r - codebook[nearest(r, codebook)]

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        if not self.initialized:
            raise RuntimeError("codebooks are not initialised: call init_codebooks (fit does) first")
        residuals, codewords, codes = [], [], []
        r = z                                          # r_1 = z                        [B, d_z]
        for codebook in self.codebooks:                # codebook E_l                   [K_l, d_z]
            k = nearest(r.detach(), codebook.detach())  # k_l = argmin ||r_l - e_k||^2  [B]
            e = codebook[k]                            # e_{k_l}, gradient into E_l     [B, d_z]
            residuals.append(r)
            codewords.append(e)
            codes.append(k)
            # sg[e]: the next residual passes gradient to the encoder only, so codewords learn only from their
            # own codebook loss and the encoder from commitment + reconstruction, as Sec. 2 describes the terms
            r = r - e.detach()                         # r_{l+1} = r_l - e_{k_l}
        codewords_t = torch.stack(codewords, dim=1)    # [B, L, d_z]
        return QuantizerOutput(torch.stack(codes, dim=1), torch.stack(residuals, dim=1), codewords_t,
                               codewords_t.sum(dim=1))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """int [B, L] codes -> z_q [B, d_z] = sum_l E_l[codes[:, l]]."""
        return sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))


@dataclass
class RQVAEOutput:
    x_hat: torch.Tensor       # [B, d_in] reconstruction
    z: torch.Tensor           # [B, d_z]  encoder output
    quant: QuantizerOutput
    recon: torch.Tensor       # scalar    mean ||x - x_hat||^2
    codebook: torch.Tensor    # scalar    sum_l mean ||sg[r_l] - e_l||^2
    commitment: torch.Tensor  # scalar    beta * sum_l mean ||r_l - sg[e_l]||^2
    loss: torch.Tensor        # scalar    recon + codebook + commitment


class RQVAE(nn.Module):
    """Encoder -> residual quantizer -> decoder, with the 3MToken loss."""

    def __init__(self, d_in: int, d_z: int = 32, hidden_dims: tuple[int, ...] = (512, 256, 128),
                 codebook_sizes: tuple[int, ...] = (32, 64, 128), beta: float = 0.25):
        super().__init__()
        self.beta = beta
        self.encoder = mlp([d_in, *hidden_dims, d_z])            # f_theta
        self.decoder = mlp([d_z, *reversed(hidden_dims), d_in])  # g_phi, mirrored
        self.quantizer = ResidualQuantizer(d_z, codebook_sizes)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        z = self.encoder(x)                              # z = f_theta(x)                  [B, d_z]
        q = self.quantizer(z)                            # codes [B, L], z_q               [B, d_z]
        z_st = z + (q.z_q - z).detach()                  # straight-through: value z_q, gradient to z
        x_hat = self.decoder(z_st)                       # x_hat = g_phi(z_q)              [B, d_in]
        r, e = q.residuals, q.codewords                  # [B, L, d_z] each
        recon = F.mse_loss(x_hat, x)
        codebook = sum(F.mse_loss(e[:, l], r[:, l].detach()) for l in range(r.shape[1]))
        commitment = self.beta * sum(F.mse_loss(r[:, l], e[:, l].detach()) for l in range(r.shape[1]))
        return RQVAEOutput(x_hat, z, q, recon, codebook, commitment, recon + codebook + commitment)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(x)).codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(codes))


def resolve_device(device: str) -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def code_usage(codes: torch.Tensor, codebook_sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """int [n, L] codes -> per level, how often each codeword was picked (int64 [K_l])."""
    # scatter_add rather than bincount: bincount reads the max back to the host, a GPU sync every step
    return [torch.zeros(k, dtype=torch.long, device=codes.device).scatter_add_(0, c, torch.ones_like(c))
            for k, c in zip(codebook_sizes, codes.T)]


@register("rqvae")
class RQVAEQuantizer(ModalityQuantizer):
    """One modality's RQ-VAE, trained with AdamW on the present training rows (defaults: 3MToken Sec. 3, App. D)."""

    default_codebook_sizes: tuple[int, ...] = (32, 64, 128)

    def __init__(self, d_z: int = 32, hidden_dims: tuple[int, ...] = (512, 256, 128),
                 codebook_sizes: tuple[int, ...] | None = None, beta: float = 0.25, lr: float = 1e-4,
                 weight_decay: float = 0.01, batch_size: int = 512, epochs: int = 150, seed: int = 0,
                 kmeans_init_iters: int = 20, dead_code_reset: bool = False, device: str = "auto",
                 encode_batch_rows: int = 65536, standardize: bool = False):
        self.codebook_sizes = tuple(codebook_sizes or self.default_codebook_sizes)
        self.settings = {"d_z": d_z, "hidden_dims": list(hidden_dims), "codebook_sizes": list(self.codebook_sizes),
                         "beta": beta, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
                         "epochs": epochs, "seed": seed, "kmeans_init_iters": kmeans_init_iters,
                         "dead_code_reset": dead_code_reset, "device": device,
                         "encode_batch_rows": encode_batch_rows, "standardize": standardize}
        self.epochs, self.batch_size, self.encode_batch_rows = epochs, batch_size, encode_batch_rows
        self.device = resolve_device(device)
        self.d_in: int | None = None
        self.model: RQVAE | None = None
        # per-feature input statistics when standardize=True: the model sees (x - mean) / std, decode maps back
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mean is None else (x - self.mean) / self.std

    def _from_model(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.mean is None else y * self.std + self.mean

    def _build(self, d_in: int) -> RQVAE:
        self.d_in = d_in
        s = self.settings
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's global RNG
            torch.manual_seed(s["seed"])
            model = RQVAE(d_in, s["d_z"], tuple(s["hidden_dims"]), self.codebook_sizes, s["beta"])
        self.model = model.to(self.device)
        return self.model

    def fit(self, x_train: np.ndarray, x_val: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None) -> None:
        s = self.settings
        # the whole training matrix lives on the device and batches are indexed from it (no DataLoader)
        x = torch.as_tensor(np.ascontiguousarray(x_train, dtype=np.float32), device=self.device)  # [n, d]
        if len(x) < 2:
            raise ValueError(f"RQ-VAE needs at least 2 training rows (BatchNorm), got {len(x)}")
        xv = None if x_val is None or len(x_val) == 0 else \
            torch.as_tensor(np.ascontiguousarray(x_val, dtype=np.float32), device=self.device)
        if s["standardize"]:
            # Sentence embeddings spread their variance thinly over hundreds of dims (per-feature variance ~1/d):
            # the reconstruction gradient is then too weak against the codebook/commitment pull and the encoder
            # collapses onto one codeword. Z-scoring each feature with the training statistics prevents that.
            self.mean = x.mean(dim=0)
            self.std = x.std(dim=0).clamp_min(1e-6)
            x = self._to_model(x)
        model = self._build(x.shape[1])
        # fused on CUDA: one kernel for the whole update (this small model's training step is launch-bound)
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"],
                                fused=self.device.type == "cuda")
        gen = torch.Generator().manual_seed(s["seed"])  # shuffling, k-means init and resets: reproducible
        for epoch in range(1, self.epochs + 1):
            record = {"epoch": epoch, **self._train_epoch(x, opt, gen),
                      "val_recon": self.reconstruction_mse(xv) if xv is not None else None}
            if log is not None:
                log(record)
        model.eval()

    def _train_epoch(self, x: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator) -> dict:
        """One shuffled pass over x -> mean losses and dead codes (codewords no row picked) per level."""
        model, s = self.model, self.settings
        model.train()
        perm = torch.randperm(len(x), generator=gen).to(self.device)
        if not model.quantizer.initialized:  # App. D: k-means on the first training batch,
            # grown to one row per codeword where a codebook is larger than a batch (VQ-VAE: 1024 > 512)
            init_rows = x[perm[:max(self.batch_size, max(self.codebook_sizes))]]
            with torch.no_grad():
                model.quantizer.init_codebooks(model.encoder(init_rows), s["kmeans_init_iters"], gen)
            self._warn_if_few_rows(len(torch.unique(init_rows, dim=0)))
        sums = dict.fromkeys(("loss", "recon", "codebook", "commitment"), torch.zeros((), device=self.device))
        usage = [torch.zeros(k, dtype=torch.long, device=self.device) for k in self.codebook_sizes]
        seen, batch = 0, None
        for start in range(0, len(x), self.batch_size):
            idx = perm[start:start + self.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single row; it is seen again next epoch
                continue
            batch = x[idx]                                                      # [B, d]
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            out.loss.backward()
            opt.step()
            for key in sums:  # kept on the device: no GPU sync per step
                sums[key] = sums[key] + getattr(out, key).detach() * len(idx)
            for level, counts in enumerate(code_usage(out.quant.codes, self.codebook_sizes)):
                usage[level] += counts
            seen += len(idx)
        dead = [int((u == 0).sum()) for u in usage]
        if s["dead_code_reset"] and sum(dead) and batch is not None:
            with torch.no_grad():
                model.quantizer.reset_dead_codes(model.encoder(batch), usage, gen)
        return {**{k: float(v) / max(seen, 1) for k, v in sums.items()}, "dead_codes": dead}

    def _warn_if_few_rows(self, distinct: int) -> None:
        if distinct < max(self.codebook_sizes):
            print(f"[{self.method}] k-means init: {distinct} distinct training rows for codebooks of "
                  f"{list(self.codebook_sizes)}; extra codewords start next to data rows and may stay dead",
                  file=sys.stderr)

    @torch.no_grad()
    def reconstruction_mse(self, x: torch.Tensor) -> float:
        """Mean squared error of decode(encode(x)) in eval mode (what the tokens preserve)."""
        self.model.eval()
        total = 0.0
        for start in range(0, len(x), self.encode_batch_rows):
            xb = x[start:start + self.encode_batch_rows]  # raw embedding space
            x_hat = self._from_model(self.model.decode(self.model.encode(self._to_model(xb))))
            total += float(F.mse_loss(x_hat, xb, reduction="sum"))
        return total / (len(x) * x.shape[1])

    def _check_fitted(self) -> RQVAE:
        if self.model is None:
            raise RuntimeError(f"{self.method} quantizer is not trained or loaded")
        self.model.eval()
        return self.model

    @torch.no_grad()
    def encode(self, x: np.ndarray) -> np.ndarray:
        model = self._check_fitted()
        out = [model.encode(self._to_model(torch.as_tensor(
                   np.ascontiguousarray(x[i:i + self.encode_batch_rows], np.float32), device=self.device))).cpu()
               for i in range(0, len(x), self.encode_batch_rows)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.codebook_sizes)), np.int64)

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        model = self._check_fitted()
        out = [self._from_model(model.decode(torch.as_tensor(np.asarray(codes[i:i + self.encode_batch_rows]),
                                                             dtype=torch.long, device=self.device))).cpu()
               for i in range(0, len(codes), self.encode_batch_rows)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.d_in), np.float32)

    def save(self, path: str | Path) -> None:
        model = self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path / "model.pt")
        if self.mean is not None:
            torch.save({"mean": self.mean.cpu(), "std": self.std.cpu()}, path / "input_stats.pt")
        (path / "config.json").write_text(json.dumps({"method": self.method, "d_in": self.d_in, **self.settings},
                                                     indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> RQVAEQuantizer:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        if config.pop("method") != cls.method:
            raise ValueError(f"{path}: not a {cls.method} checkpoint")
        d_in = config.pop("d_in")
        if device is not None:
            config["device"] = device
        quantizer = cls(**config)
        model = quantizer._build(d_in)
        model.load_state_dict(torch.load(path / "model.pt", map_location=quantizer.device, weights_only=True))
        if (path / "input_stats.pt").exists():
            stats = torch.load(path / "input_stats.pt", map_location=quantizer.device, weights_only=True)
            quantizer.mean, quantizer.std = stats["mean"], stats["std"]
        model.eval()
        return quantizer


@register("vqvae")
class VQVAEQuantizer(RQVAEQuantizer):
    """The VQ-VAE baseline of 3MToken (Sec. 3): the same encoder/decoder, one codebook of 1024 codewords."""

    default_codebook_sizes = (1024,)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if len(self.codebook_sizes) != 1:
            raise ValueError(f"VQ-VAE has one codebook, got sizes {self.codebook_sizes}")

