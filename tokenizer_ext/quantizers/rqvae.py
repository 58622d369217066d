"""RQ-VAE and VQ-VAE quantizers of 3MToken: one modality's embeddings float32 [n, d] <-> codes int [n, L].

Training loop (AdamW on the present training rows, k-means codebook init on the first batch), encode / decode and
checkpoint I/O around the model of `rqvae_model.py`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tokenizer_ext.quantizers.base import ModalityQuantizer, read_checkpoint_config, register
from tokenizer_ext.quantizers.rqvae_model import RQVAE, code_usage, resolve_device

STANDARDIZE_SCALES = ("feature", "global")


@register("rqvae")
class RQVAEQuantizer(ModalityQuantizer):
    """One modality's RQ-VAE, trained with AdamW on the present training rows (defaults: 3MToken Sec. 3, App. D)."""

    default_codebook_sizes: tuple[int, ...] = (32, 64, 128)

    def __init__(self, d_z: int = 32, hidden_dims: tuple[int, ...] = (512, 256, 128),
                 codebook_sizes: tuple[int, ...] | None = None, beta: float = 0.25, lr: float = 1e-4,
                 weight_decay: float = 0.01, batch_size: int = 512, epochs: int = 150, seed: int = 0,
                 kmeans_init_iters: int = 20, dead_code_reset: bool = False, device: str = "auto",
                 encode_batch_rows: int = 65536, standardize: bool = False, kmeans_init_rows: int = 0,
                 standardize_scale: str = "feature"):
        if kmeans_init_rows < -1:
            raise ValueError(f"kmeans_init_rows={kmeans_init_rows}: 0 (one batch), N > 0 rows or -1 (every row)")
        if standardize_scale not in STANDARDIZE_SCALES:
            raise ValueError(f"standardize_scale={standardize_scale!r}: expected one of {STANDARDIZE_SCALES}")
        self.codebook_sizes = tuple(codebook_sizes or self.default_codebook_sizes)
        self.settings = {"d_z": d_z, "hidden_dims": list(hidden_dims), "codebook_sizes": list(self.codebook_sizes),
                         "beta": beta, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
                         "epochs": epochs, "seed": seed, "kmeans_init_iters": kmeans_init_iters,
                         "kmeans_init_rows": kmeans_init_rows,
                         "dead_code_reset": dead_code_reset, "device": device,
                         "encode_batch_rows": encode_batch_rows, "standardize": standardize,
                         "standardize_scale": standardize_scale}
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
            self._set_input_stats(x)
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
        if not model.quantizer.initialized:
            self._init_codebooks(x, perm, gen)
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

    def _set_input_stats(self, x: torch.Tensor) -> None:
        """The training statistics that standardize=True scales inputs with. Sentence embeddings spread their variance
        thinly over hundreds of dims (per-feature variance ~1/d): the reconstruction gradient is then too weak against
        the codebook/commitment pull and the encoder collapses onto one codeword. standardize_scale "feature" z-scores
        each feature; "global" centres each feature and divides all by one scale (the root mean per-feature variance),
        which fixes the scale and keeps the embedding's geometry (distances up to a constant)."""
        self.mean = x.mean(dim=0)
        std = x.std(dim=0)
        if self.settings["standardize_scale"] == "global":
            std = std.square().mean().sqrt().expand_as(std).contiguous()
        self.std = std.clamp_min(1e-6)

    @torch.no_grad()
    def _init_codebooks(self, x: torch.Tensor, perm: torch.Tensor, gen: torch.Generator) -> None:
        """k-means codebook init on the latents of rows taken in the order of the first shuffle `perm`: by default
        (App. D) the first training batch, grown to one row per codeword where a codebook is larger than a batch
        (VQ-VAE: 1024 > 512); kmeans_init_rows N > 0: N rows; -1: every row."""
        n = self.settings["kmeans_init_rows"]
        n = len(x) if n == -1 else n or max(self.batch_size, max(self.codebook_sizes))
        init_rows = x[perm[:n]]
        self.model.quantizer.init_codebooks(self.model.encoder(init_rows), self.settings["kmeans_init_iters"], gen)
        self._warn_if_few_rows(len(torch.unique(init_rows, dim=0)))

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
        config, extra = read_checkpoint_config(cls, path, device, pop=("d_in",))
        quantizer = cls(**config)
        model = quantizer._build(extra["d_in"])
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

