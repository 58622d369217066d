"""MusicRec shared-specific RQ (MusicRec paper, "Multi-modal Semantic-enhanced Identifier"): all modalities of a
track -> shared codes (group SH) + modality-specific codes (one group per modality) and back to each modality.

    z_m = Encoder_m(x_m) (0 if missing),  z = W [z_1; ...; z_M]        shared RQ over z -> z^e_q,  r^e = z - z^e_q
    specific RQ: r^e split into M parts of d, part m -> modality m's codebooks -> z^m_q
    x_hat_m = Decoder_m((z^e_q)_m + z^m_q)
    L = sum_m ||x_m - x_hat_m||^2 + L_RQ(shared) + sum_m L_RQ(m) + alpha L_align + beta_rel L_relation
L_align: InfoNCE between the quantized representation and the collaborative embedding (TC by default); L_relation:
MSE between their in-batch cosine-similarity matrices. Ours, not the paper's: tau = 0.1, mu = 0.25, optimizer, epochs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenizer_ext.quantizers.base import JointQuantizer, read_checkpoint_config, register_joint
from tokenizer_ext.quantizers.joint import JointFeatures, any_present, optimizer_step
from tokenizer_ext.quantizers.rqvae_model import QuantizerOutput, ResidualQuantizer, mlp, resolve_device
from tokenizer_ext.tokens import MISSING


def rq_loss(q: QuantizerOutput, mu: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum_l ||sg[r_l] - e_l||^2 + mu ||r_l - sg[e_l]||^2, averaged over the rows of `mask` (default all)."""
    r, e = q.residuals, q.codewords  # [B, L, d]
    per_row = ((e - r.detach()) ** 2).mean(dim=2).sum(dim=1) + mu * ((r - e.detach()) ** 2).mean(dim=2).sum(dim=1)
    if mask is None:
        return per_row.mean()
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row i of a and row i of b are the positive pair, the other rows of b the negatives (cosine / tau)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def relation_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the in-batch cosine-similarity matrices of a and b."""
    sim_a = F.normalize(a, dim=1) @ F.normalize(a, dim=1).T
    sim_b = F.normalize(b, dim=1) @ F.normalize(b, dim=1).T
    return F.mse_loss(sim_a, sim_b)


@dataclass
class SharedSpecificOutput:
    shared: QuantizerOutput
    specific: dict[str, QuantizerOutput]
    z_hat: dict[str, torch.Tensor]  # modality -> [B, d] quantized latent (shared part + specific part)
    x_hat: dict[str, torch.Tensor]  # modality -> [B, d_m] reconstruction (standardised space)


class SharedSpecificRQ(nn.Module):
    """Per-modality encoders and decoders around a shared RQ and per-modality RQs (module docstring)."""

    def __init__(self, dims: dict[str, int], d_z: int = 32, hidden_dims: tuple[int, ...] = (512, 256, 128),
                 shared_sizes: tuple[int, ...] = (256, 256), specific_sizes: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.modalities, self.d_z = tuple(dims), d_z
        self.encoders = nn.ModuleDict({m: mlp([d, *hidden_dims, d_z]) for m, d in dims.items()})
        self.decoders = nn.ModuleDict({m: mlp([d_z, *reversed(hidden_dims), d]) for m, d in dims.items()})
        width = len(dims) * d_z
        self.project = nn.Linear(width, width)
        self.shared = ResidualQuantizer(width, shared_sizes)
        self.specific = nn.ModuleDict({m: ResidualQuantizer(d_z, specific_sizes) for m in dims})

    def latent(self, x: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """x: modality -> [B, d_m], mask [B, M] float -> z [B, M*d]."""
        parts = [self.encoders[m](x[m]) * mask[:, i:i + 1] for i, m in enumerate(self.modalities)]
        return self.project(torch.cat(parts, dim=1))

    @torch.no_grad()
    def init_codebooks(self, x: dict[str, torch.Tensor], mask: torch.Tensor, iters: int,
                       generator: torch.Generator) -> None:
        """k-means on one batch, as the RQ-VAE: shared levels on z, each modality's levels on its residual part."""
        z = self.latent(x, mask)
        self.shared.init_codebooks(z, iters, generator)
        residual = z - self.shared(z).z_q
        for i, m in enumerate(self.modalities):
            rows = mask[:, i] > 0
            part = residual[:, i * self.d_z:(i + 1) * self.d_z]
            self.specific[m].init_codebooks(part[rows] if rows.sum() > 1 else part, iters, generator)

    def forward(self, x: dict[str, torch.Tensor], mask: torch.Tensor) -> SharedSpecificOutput:
        z = self.latent(x, mask)                                # [B, M*d]
        shared = self.shared(z)                                 # codes [B, L_e], z_q [B, M*d]
        residual = z - shared.z_q.detach()                      # r^e after the shared levels, gradient to z
        specific, z_hat, x_hat = {}, {}, {}
        for i, m in enumerate(self.modalities):
            cut = slice(i * self.d_z, (i + 1) * self.d_z)
            q = self.specific[m](residual[:, cut])              # codes [B, L_c], z_q [B, d]
            z_hat[m] = shared.z_q[:, cut] + q.z_q               # quantized latent of modality m
            z_st = z[:, cut] + (z_hat[m] - z[:, cut]).detach()  # straight-through: value z_hat, gradient to z
            specific[m], x_hat[m] = q, self.decoders[m](z_st)
        return SharedSpecificOutput(shared, specific, z_hat, x_hat)

    @torch.no_grad()
    def decode(self, shared_codes: torch.Tensor, specific_codes: torch.Tensor, modality: str) -> torch.Tensor:
        i = self.modalities.index(modality)
        cut = slice(i * self.d_z, (i + 1) * self.d_z)
        return self.decoders[modality](self.shared.lookup(shared_codes)[:, cut]
                                       + self.specific[modality].lookup(specific_codes))


@register_joint("musicrec")
class MusicRecQuantizer(JointQuantizer):
    """Shared-specific RQ with optional collaborative alignment: groups SH + one group per input modality."""

    group = "SH"

    def __init__(self, codebook_sizes: tuple[int, ...] = (256, 256, 256, 256), shared_levels: int = 2,
                 d_z: int = 32, hidden_dims: tuple[int, ...] = (512, 256, 128), beta: float = 0.25,
                 align_weight: float = 1e-2, relation_weight: float = 1e-4, align_temperature: float = 0.1,
                 align_modality: str = "TC", lr: float = 1e-4, weight_decay: float = 0.01, batch_size: int = 512,
                 epochs: int = 150, seed: int = 0, kmeans_init_iters: int = 20, device: str = "auto",
                 encode_batch_rows: int = 65536):
        sizes = [int(k) for k in codebook_sizes]
        if not 0 < shared_levels < len(sizes):
            raise ValueError(f"shared_levels must leave at least one shared and one specific level of {sizes}")
        self.settings = {"codebook_sizes": sizes, "shared_levels": shared_levels, "d_z": d_z,
                         "hidden_dims": list(hidden_dims), "beta": beta, "align_weight": align_weight,
                         "relation_weight": relation_weight, "align_temperature": align_temperature,
                         "align_modality": align_modality, "lr": lr, "weight_decay": weight_decay,
                         "batch_size": batch_size, "epochs": epochs, "seed": seed,
                         "kmeans_init_iters": kmeans_init_iters, "device": device,
                         "encode_batch_rows": encode_batch_rows}
        self.epochs = epochs
        self.device = resolve_device(device)
        self.shared_sizes, self.specific_sizes = tuple(sizes[:shared_levels]), tuple(sizes[shared_levels:])
        self.features: JointFeatures | None = None
        self.model: SharedSpecificRQ | None = None
        self.align_head: nn.Linear | None = None
        self.codebook_sizes = {self.group: self.shared_sizes}

    def _build(self, dims: dict[str, int]) -> None:
        s = self.settings
        self.model = SharedSpecificRQ(dims, s["d_z"], tuple(s["hidden_dims"]), self.shared_sizes,
                                      self.specific_sizes).to(self.device)
        cf = s["align_modality"]
        self.align_head = nn.Linear(s["d_z"], dims[cf]).to(self.device) if cf and cf in dims else None
        self.codebook_sizes = {self.group: self.shared_sizes, **{m: self.specific_sizes for m in self.model.modalities}}

    def _tensors(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], rows: np.ndarray | slice
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        xs = {m: torch.from_numpy(self.features.transform_block(m, x[m][rows], present[m][rows])).to(self.device)
              for m in self.features.modalities}
        mask = torch.from_numpy(self.features.flags({m: present[m][rows] for m in self.features.modalities}))
        return xs, mask.to(self.device)

    def losses(self, xs: dict[str, torch.Tensor], mask: torch.Tensor, cf: torch.Tensor | None = None,
               cf_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        s = self.settings
        out = self.model(xs, mask)
        recon = sum((((out.x_hat[m] - xs[m]) ** 2).mean(dim=1) * mask[:, i]).sum() / mask[:, i].sum().clamp_min(1)
                    for i, m in enumerate(self.model.modalities))
        rq = rq_loss(out.shared, s["beta"]) + sum(rq_loss(out.specific[m], s["beta"], mask[:, i])
                                                  for i, m in enumerate(self.model.modalities))
        zero = recon.new_zeros(())
        align = relation = zero
        if self.align_head is not None and cf is not None and cf_mask is not None and cf_mask.sum() > 1:
            weights = mask / mask.sum(dim=1, keepdim=True).clamp_min(1)
            z_item = sum(out.z_hat[m] * weights[:, i:i + 1] for i, m in enumerate(self.model.modalities))
            rows = cf_mask > 0
            if s["align_weight"]:
                align = info_nce(self.align_head(z_item[rows]), cf[rows], s["align_temperature"])
            if s["relation_weight"]:
                relation = relation_loss(z_item[rows], cf[rows])
        loss = recon + rq + s["align_weight"] * align + s["relation_weight"] * relation
        return {"loss": loss, "recon": recon, "rq": rq, "align": align, "relation": relation}

    def fit(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], pairs: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None, pair_scores: np.ndarray | None = None) -> None:
        s = self.settings
        torch.manual_seed(s["seed"])
        generator = torch.Generator().manual_seed(s["seed"])
        rng = np.random.default_rng(s["seed"])
        self.features = JointFeatures({m: v.shape[1] for m, v in x.items()}).fit(x, present)
        self._build(self.features.dims)
        cf_name = s["align_modality"] if self.align_head is not None else None
        keep = np.flatnonzero(any_present(present))
        params = list(self.model.parameters()) + (list(self.align_head.parameters()) if self.align_head else [])
        optimizer = torch.optim.AdamW(params, lr=s["lr"], weight_decay=s["weight_decay"])
        for epoch in range(1, s["epochs"] + 1):
            self.model.train()
            order = keep[rng.permutation(len(keep))]
            totals: dict[str, float] = {}
            steps = 0
            for start in range(0, len(order), s["batch_size"]):
                rows = np.sort(order[start:start + s["batch_size"]])
                if len(rows) < 2:
                    continue  # BatchNorm needs two rows
                xs, mask = self._tensors(x, present, rows)
                if not self.model.shared.initialized:
                    self.model.eval()  # k-means init on the encoder's output without touching BatchNorm statistics
                    self.model.init_codebooks(xs, mask, s["kmeans_init_iters"], generator)
                    self.model.train()
                cf = cf_mask = None
                if cf_name:
                    cf = torch.from_numpy(np.asarray(x[cf_name][rows], np.float32)).to(self.device)
                    cf_mask = torch.from_numpy(np.asarray(present[cf_name][rows], np.float32)).to(self.device)
                out = self.losses(xs, mask, cf, cf_mask)
                optimizer_step(optimizer, out, totals)
                steps += 1
            if log is not None:
                codes = self.encode({m: x[m][keep] for m in x}, {m: present[m][keep] for m in present}) \
                    if epoch == s["epochs"] else None
                dead = [] if codes is None else [
                    int((np.bincount(c[c[:, 0] >= 0, level], minlength=k) == 0).sum())
                    for g, c in codes.items() for level, k in enumerate(self.codebook_sizes[g])]
                log({"epoch": epoch, **{k: v / max(steps, 1) for k, v in totals.items()}, "dead_codes": dead})

    @torch.no_grad()
    def encode(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.model is None:
            raise RuntimeError("musicrec quantizer is not trained or loaded")
        self.model.eval()
        n = len(next(iter(present.values())))
        keep = any_present(present)
        out = {g: np.full((n, len(sizes)), MISSING, np.int64) for g, sizes in self.codebook_sizes.items()}
        step = self.settings["encode_batch_rows"]
        for start in range(0, n, step):
            rows = np.arange(start, min(n, start + step))
            rows = rows[keep[rows]]
            if not len(rows):
                continue
            xs, mask = self._tensors(x, present, rows)
            result = self.model(xs, mask)
            out[self.group][rows] = result.shared.codes.cpu().numpy()
            for i, m in enumerate(self.model.modalities):
                has = mask[:, i].cpu().numpy() > 0
                out[m][rows[has]] = result.specific[m].codes.cpu().numpy()[has]
        return out

    def decode(self, codes: dict[str, np.ndarray], modality: str) -> np.ndarray:
        self.model.eval()
        shared = torch.from_numpy(np.asarray(codes[self.group], np.int64)).to(self.device)
        specific = torch.from_numpy(np.asarray(codes[modality], np.int64)).to(self.device)
        y = self.model.decode(shared, specific, modality).cpu().numpy()
        return self.features.inverse_block(modality, y)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model.state_dict(),
                 "align_head": self.align_head.state_dict() if self.align_head is not None else None}
        torch.save(state, path / "model.pt")
        self.features.save(path / "features.npz")
        (path / "config.json").write_text(json.dumps({"method": self.method, **self.settings,
                                                      "dims": self.features.dims}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> MusicRecQuantizer:
        path = Path(path)
        config, extra = read_checkpoint_config(cls, path, device, pop=("dims",))
        dims = extra["dims"]
        q = cls(**config)
        q.features = JointFeatures.load(path / "features.npz", dims)
        q._build(q.features.dims)
        state = torch.load(path / "model.pt", map_location=q.device)
        q.model.load_state_dict(state["model"])
        if q.align_head is not None:
            q.align_head.load_state_dict(state["align_head"])
        return q
