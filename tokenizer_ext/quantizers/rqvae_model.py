"""RQ-VAE of 3MToken (Sec. 2, App. B, D): one modality's embeddings float32 [n, d] <-> codes int [n, L].

    z   = f_theta(x)                         encoder MLP d -> 512 -> 256 -> 128 -> d_z (BatchNorm + ReLU)
    r_1 = z,  k_l = argmin_k ||r_l - e_k||^2,  r_{l+1} = r_l - e_{k_l}       L residual codebooks
    z_q = sum_l e_{k_l},  x_hat = g_phi(z_q)  decoder MLP d_z -> 128 -> 256 -> 512 -> d (mirrored)
    loss = ||x - x_hat||^2 + sum_l ( ||sg[r_l] - e_{k_l}||^2 + beta ||r_l - sg[e_{k_l}]||^2 )

(The paper numbers residuals from r_0 = z.) Codebooks are initialised by k-means on the first training batch (App. D).
The VQ-VAE baseline is this model with one 1024-entry codebook; the training loop is in rqvae.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


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
        levels = range(r.shape[1])
        codebook = sum(F.mse_loss(e[:, lv], r[:, lv].detach()) for lv in levels)
        commitment = self.beta * sum(F.mse_loss(r[:, lv], e[:, lv].detach()) for lv in levels)
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
