"""FusID (FusID paper, Sec. 2): all modalities of a track -> n sub-embeddings -> n codes (code group FU).

    E = f_theta([M_1; ...; M_m])     Linear(D, 2048) -> BatchNorm -> ReLU -> Linear(2048, n*d) -> LayerNorm per e_i
    L_cont = MSE(|1 - y|, ||E_i - E_j||)   y = 1 for co-occurring pairs (target distance 0), 0 for others (1)
    L_cov  = 2 / (n(n-1)) sum_{i<j} ||Cov(e_i, e_j)||_F^2 / d          block-wise cross-covariance over the batch
    L_var  = mean_c max(0, gamma - sqrt(Var(E_c) + eps))               every one of the n*d features
    L      = L_cont + alpha (L_cov + L_var),  alpha = 0.2, gamma = 1
Then k-means on each sub-embedding: token j of a track is the cluster of e_j (`<FU3-17>`). No decoder. Positive
pairs are drawn by normalised co-occurrence (joint.py), negatives uniformly from pairs that never co-occur.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenizer_ext.quantizers.base import JointQuantizer, read_checkpoint_config, register_joint
from tokenizer_ext.quantizers.joint import JointFeatures, any_present, optimizer_step
from tokenizer_ext.quantizers.kmeans import KMeansQuantizer
from tokenizer_ext.quantizers.rqvae_model import resolve_device
from tokenizer_ext.tokens import MISSING


class FusionNetwork(nn.Module):
    """[B, D] fused input -> [B, n, d] sub-embeddings (FusID Sec. 3 "Implementation Details")."""

    def __init__(self, d_in: int, num_sub: int = 5, sub_dim: int = 128, hidden_dim: int = 2048):
        super().__init__()
        self.num_sub, self.sub_dim = num_sub, sub_dim
        self.head = nn.Sequential(nn.Linear(d_in, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                                  nn.Linear(hidden_dim, num_sub * sub_dim))
        self.norm = nn.LayerNorm(sub_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.head(x).view(-1, self.num_sub, self.sub_dim))


def contrastive_loss(e_a: torch.Tensor, e_b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B, n, d] x 2, y float [B] (1 = positive) -> MSE between the Euclidean distance and |1 - y| (Eq. 1)."""
    distance = (e_a - e_b).flatten(1).norm(dim=1)
    return F.mse_loss(distance, (1.0 - y).abs())


def covariance_loss(e: torch.Tensor) -> torch.Tensor:
    """[B, n, d] -> mean over sub-embedding pairs i < j of ||Cov(e_i, e_j)||_F^2 / d (Eq. 2)."""
    b, n, d = e.shape
    centred = e - e.mean(dim=0, keepdim=True)
    cov = torch.einsum("bid,bje->ijde", centred, centred) / max(b - 1, 1)  # [n, n, d, d] cross-covariances
    i, j = torch.triu_indices(n, n, offset=1)
    return cov[i, j].pow(2).sum(dim=(1, 2)).mean() / d if n > 1 else e.new_zeros(())


def variance_loss(e: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """[B, n, d] -> mean over the n*d features of max(0, gamma - std) (Eq. 3)."""
    std = torch.sqrt(e.flatten(1).var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def sample_pairs(pairs: np.ndarray, scores: np.ndarray, num_rows: int, count: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """-> (int64 [count, 2] pairs, float32 [count] y): half positives drawn by score, half non-co-occurring pairs."""
    n_pos = count // 2
    pos = pairs[rng.choice(len(pairs), size=n_pos, p=scores / scores.sum())]
    known = pairs[:, 0] * num_rows + pairs[:, 1]  # sorted: pairs come sorted by (i, j)
    neg = np.zeros((0, 2), np.int64)
    while len(neg) < count - n_pos:
        cand = rng.integers(0, num_rows, size=(2 * (count - n_pos), 2))
        cand = np.sort(cand, axis=1)
        cand = cand[cand[:, 0] != cand[:, 1]]
        key = cand[:, 0] * num_rows + cand[:, 1]
        pos_in = np.clip(np.searchsorted(known, key), 0, max(len(known) - 1, 0))
        cand = cand[known[pos_in] != key] if len(known) else cand
        neg = np.concatenate([neg, cand])[:count - n_pos]
    both = np.concatenate([pos, neg])
    y = np.r_[np.ones(n_pos, np.float32), np.zeros(len(neg), np.float32)]
    order = rng.permutation(len(both))
    return both[order], y[order]


@register_joint("fusid")
class FusIDQuantizer(JointQuantizer):
    """Fusion network trained on co-occurrence pairs, then k-means product quantization of its sub-embeddings."""

    group = "FU"

    def __init__(self, codebook_sizes: tuple[int, ...] = (1024,) * 5, sub_embedding_dim: int = 128,
                 fusion_hidden_dim: int = 2048, reg_weight: float = 0.2, variance_target: float = 1.0,
                 lr: float = 5e-4, batch_size: int = 128, epochs: int = 100, seed: int = 0,
                 full_batch_max_rows: int = 65536, device: str = "auto", encode_batch_rows: int = 65536):
        self.settings = {"codebook_sizes": [int(k) for k in codebook_sizes], "sub_embedding_dim": sub_embedding_dim,
                         "fusion_hidden_dim": fusion_hidden_dim, "reg_weight": reg_weight,
                         "variance_target": variance_target, "lr": lr, "batch_size": batch_size, "epochs": epochs,
                         "seed": seed, "full_batch_max_rows": full_batch_max_rows, "device": device,
                         "encode_batch_rows": encode_batch_rows}
        self.epochs = epochs
        self.device = resolve_device(device)
        self.codebook_sizes = {self.group: tuple(self.settings["codebook_sizes"])}
        self.features: JointFeatures | None = None
        self.network: FusionNetwork | None = None
        self.codebooks: list[KMeansQuantizer] = []

    def _inputs(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([self.features.transform(x, present), self.features.flags(present)], axis=1)

    @torch.no_grad()
    def embed(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        """-> float32 [n, num_sub, sub_dim] sub-embeddings (eval mode: BatchNorm uses its running statistics)."""
        self.network.eval()
        inputs = self._inputs(x, present)
        step = self.settings["encode_batch_rows"]
        out = [self.network(torch.from_numpy(inputs[i:i + step]).to(self.device)).cpu().numpy()
               for i in range(0, len(inputs), step)]
        return np.concatenate(out) if out else np.zeros((0, self.network.num_sub, self.network.sub_dim), np.float32)

    def losses(self, e_a: torch.Tensor, e_b: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.settings
        both = torch.cat([e_a, e_b])
        cont = contrastive_loss(e_a, e_b, y)
        cov, var = covariance_loss(both), variance_loss(both, s["variance_target"])
        return {"loss": cont + s["reg_weight"] * (cov + var), "contrastive": cont, "covariance": cov,
                "variance": var}

    def fit(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], pairs: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None, pair_scores: np.ndarray | None = None) -> None:
        s = self.settings
        if pairs is None or len(pairs) == 0:
            raise ValueError("FusID needs co-occurring training pairs (training playlists with >= 2 tracks)")
        scores = np.ones(len(pairs), np.float32) if pair_scores is None else np.asarray(pair_scores, np.float32)
        torch.manual_seed(s["seed"])
        rng = np.random.default_rng(s["seed"])
        self.features = JointFeatures({m: v.shape[1] for m, v in x.items()}).fit(x, present)
        inputs = torch.from_numpy(self._inputs(x, present)).to(self.device)
        num_sub = len(s["codebook_sizes"])
        self.network = FusionNetwork(inputs.shape[1], num_sub, s["sub_embedding_dim"],
                                     s["fusion_hidden_dim"]).to(self.device)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=s["lr"])
        n = len(inputs)
        for epoch in range(1, s["epochs"] + 1):
            self.network.train()
            batch_pairs, y = sample_pairs(pairs, scores, n, n, rng)
            totals: dict[str, float] = {}
            steps = 0
            for start in range(0, len(batch_pairs) - 1, s["batch_size"]):
                p = torch.from_numpy(batch_pairs[start:start + s["batch_size"]]).to(self.device)
                if len(p) < 2:
                    continue  # BatchNorm needs two rows
                e = self.network(torch.cat([inputs[p[:, 0]], inputs[p[:, 1]]]))
                out = self.losses(e[:len(p)], e[len(p):], torch.from_numpy(y[start:start + len(p)]).to(self.device))
                optimizer_step(optimizer, out, totals)
                steps += 1
            if log is not None:
                log({"epoch": epoch, **{k: v / max(steps, 1) for k, v in totals.items()}, "dead_codes": [0]})
        self._fit_codebooks(self.embed(x, present)[any_present(present)], log)

    def _fit_codebooks(self, e: np.ndarray, log: Callable[[dict], None] | None) -> None:
        s = self.settings
        self.codebooks = []
        for j, k in enumerate(s["codebook_sizes"]):
            km = KMeansQuantizer(num_clusters=k, seed=s["seed"] + j, full_batch_max_rows=s["full_batch_max_rows"],
                                 encode_batch_rows=s["encode_batch_rows"])
            km.fit(np.ascontiguousarray(e[:, j]))
            self.codebooks.append(km)
        self.codebook_sizes = {self.group: tuple(len(km.centroids) for km in self.codebooks)}
        if log is not None:
            codes = self._quantize(e)
            dead = [int((np.bincount(codes[:, j], minlength=k) == 0).sum())
                    for j, k in enumerate(self.codebook_sizes[self.group])]
            log({"epoch": "pq", "loss": 0.0, "dead_codes": dead,
                 "distinct_train_ids": int(len(np.unique(codes, axis=0))), "train_tracks": int(len(codes))})

    def _quantize(self, e: np.ndarray) -> np.ndarray:
        return np.stack([km.encode(np.ascontiguousarray(e[:, j]))[:, 0] for j, km in enumerate(self.codebooks)],
                        axis=1).astype(np.int64)

    def encode(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.codebooks:
            raise RuntimeError("fusid quantizer is not trained or loaded")
        keep = any_present(present)
        out = np.full((len(keep), len(self.codebooks)), MISSING, np.int64)
        if keep.any():
            out[keep] = self._quantize(self.embed(x, present)[keep])
        return {self.group: out}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.network.state_dict(), path / "model.pt")
        self.features.save(path / "features.npz")
        np.savez(path / "centroids.npz", **{f"sub_{j + 1}": km.centroids for j, km in enumerate(self.codebooks)})
        (path / "config.json").write_text(json.dumps({"method": self.method, **self.settings,
                                                      "dims": self.features.dims,
                                                      "d_in": int(self.network.head[0].in_features)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> FusIDQuantizer:
        path = Path(path)
        config, extra = read_checkpoint_config(cls, path, device, pop=("dims", "d_in"))
        dims, d_in = extra["dims"], extra["d_in"]
        q = cls(**config)
        q.features = JointFeatures.load(path / "features.npz", dims)
        q.network = FusionNetwork(d_in, len(config["codebook_sizes"]), config["sub_embedding_dim"],
                                  config["fusion_hidden_dim"]).to(q.device)
        q.network.load_state_dict(torch.load(path / "model.pt", map_location=q.device))
        with np.load(path / "centroids.npz") as z:
            for j in range(len(z.files)):
                km = KMeansQuantizer(num_clusters=len(z[f"sub_{j + 1}"]), encode_batch_rows=config["encode_batch_rows"])
                km.centroids = z[f"sub_{j + 1}"]
                km.codebook_sizes = (len(km.centroids),)
                q.codebooks.append(km)
        q.codebook_sizes = {cls.group: tuple(len(km.centroids) for km in q.codebooks)}
        return q
