"""Residual k-means without an autoencoder: RQ-KMeans and PSRQ (PSRQ paper, Sec. 4.1), embeddings [n, d] -> [n, L].

RQ-KMeans: level l runs k-means on the residual r_l (r_1 = x), r_{l+1} = r_l - c_{k_l}, x_hat = sum_l c_{k_l}.
PSRQ: level l clusters [r_l ; x], so deeper levels still group tracks by what they are; only the residual half a of
a centroid [a ; b] is subtracted (x_hat = sum_l a_{k_l}). `psrq_joint` (group MJ) runs PSRQ on all modalities side
by side (joint.py's input). Each level is a KMeansQuantizer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tokenizer_ext.quantizers.base import (
    JointQuantizer,
    ModalityQuantizer,
    read_checkpoint_config,
    register,
    register_joint,
)
from tokenizer_ext.quantizers.joint import JointFeatures, any_present
from tokenizer_ext.quantizers.kmeans import KMeansQuantizer
from tokenizer_ext.tokens import MISSING


@register("rqkmeans")
class RQKMeansQuantizer(ModalityQuantizer):
    """L k-means codebooks in series on the residuals (no encoder, no decoder network)."""

    epochs = 1  # one fit per level, logged as one "epoch"
    keep_original = False  # PSRQ sets it: cluster [residual ; original] instead of the residual alone

    def __init__(self, codebook_sizes: tuple[int, ...] = (32, 64, 128), seed: int = 0,
                 full_batch_max_rows: int = 65536, encode_batch_rows: int = 65536):
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.settings = {"codebook_sizes": list(self.codebook_sizes), "seed": seed,
                         "full_batch_max_rows": full_batch_max_rows, "encode_batch_rows": encode_batch_rows}
        self.levels: list[KMeansQuantizer] = []

    def _level_input(self, r: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.concatenate([r, x], axis=1) if self.keep_original else r

    def fit(self, x_train: np.ndarray, x_val: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None) -> None:
        s = self.settings
        x = np.ascontiguousarray(x_train, dtype=np.float32)
        r = x.copy()
        self.levels, dead = [], []
        for level, k in enumerate(s["codebook_sizes"]):
            km = KMeansQuantizer(num_clusters=k, seed=s["seed"] + level, full_batch_max_rows=s["full_batch_max_rows"],
                                 encode_batch_rows=s["encode_batch_rows"])
            u = self._level_input(r, x)
            km.fit(u)
            codes = km.encode(u)[:, 0]
            r = r - km.centroids[codes, :x.shape[1]]  # the residual half of the centroid
            dead.append(int((np.bincount(codes, minlength=len(km.centroids)) == 0).sum()))
            self.levels.append(km)
        self.codebook_sizes = tuple(len(km.centroids) for km in self.levels)
        recon = float(np.mean(r ** 2))
        if log is not None:
            log({"epoch": 1, "loss": recon, "recon": recon, "codebook": 0.0, "commitment": 0.0, "dead_codes": dead,
                 "val_recon": self.reconstruction_mse(x_val) if x_val is not None and len(x_val) else None})

    def reconstruction_mse(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float32)
        return float(np.mean((self.decode(self.encode(x)) - x) ** 2))

    def encode(self, x: np.ndarray) -> np.ndarray:
        if not self.levels:
            raise RuntimeError(f"{self.method} quantizer is not trained or loaded")
        x = np.asarray(x, dtype=np.float32)
        r, codes = x.copy(), []
        for km in self.levels:
            c = km.encode(self._level_input(r, x))[:, 0]
            r = r - km.centroids[c, :x.shape[1]]
            codes.append(c)
        return np.stack(codes, axis=1).astype(np.int64) if codes else np.zeros((len(x), 0), np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        d = self.levels[0].centroids.shape[1] // (2 if self.keep_original else 1)
        out = np.zeros((len(codes), d), np.float32)
        for level, km in enumerate(self.levels):
            out += km.centroids[codes[:, level], :d]
        return out

    def save(self, path: str | Path) -> None:
        if not self.levels:
            raise RuntimeError(f"{self.method} quantizer is not trained or loaded")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "centroids.npz", **{f"level_{i + 1}": km.centroids for i, km in enumerate(self.levels)})
        (path / "config.json").write_text(json.dumps({"method": self.method, **self.settings,
                                                      "fitted_sizes": list(self.codebook_sizes)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> RQKMeansQuantizer:
        path = Path(path)
        config, _ = read_checkpoint_config(cls, path, pop=("fitted_sizes",))
        quantizer = cls(**config)
        with np.load(path / "centroids.npz") as z:
            for level in range(len(z.files)):
                km = KMeansQuantizer(num_clusters=len(z[f"level_{level + 1}"]), seed=config["seed"] + level,
                                     encode_batch_rows=config["encode_batch_rows"])
                km.centroids = z[f"level_{level + 1}"]
                km.codebook_sizes = (len(km.centroids),)
                quantizer.levels.append(km)
        quantizer.codebook_sizes = tuple(len(km.centroids) for km in quantizer.levels)
        return quantizer


@register("psrq")
class PSRQQuantizer(RQKMeansQuantizer):
    """Progressive semantic residual quantization: each level clusters [residual ; original feature]."""

    keep_original = True


@register_joint("psrq_joint")
class PSRQJointQuantizer(JointQuantizer):
    """PSRQ modal-joint IDs: PSRQ over all modalities side by side -> code group MJ."""

    group = "MJ"

    def __init__(self, codebook_sizes: tuple[int, ...] = (128, 128, 128), seed: int = 0,
                 full_batch_max_rows: int = 65536, encode_batch_rows: int = 65536):
        self.psrq = PSRQQuantizer(codebook_sizes, seed, full_batch_max_rows, encode_batch_rows)
        self.features: JointFeatures | None = None
        self.codebook_sizes = {self.group: self.psrq.codebook_sizes}

    def fit(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], pairs: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None, pair_scores: np.ndarray | None = None) -> None:
        self.features = JointFeatures({m: v.shape[1] for m, v in x.items()}).fit(x, present)
        keep = any_present(present)
        self.psrq.fit(self.features.transform(x, present)[keep], log=log)
        self.codebook_sizes = {self.group: self.psrq.codebook_sizes}

    def encode(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = any_present(present)
        out = np.full((len(keep), len(self.psrq.codebook_sizes)), MISSING, np.int64)
        if keep.any():
            out[keep] = self.psrq.encode(self.features.transform(x, present)[keep])
        return {self.group: out}

    def decode(self, codes: dict[str, np.ndarray], modality: str) -> np.ndarray:
        joint = self.psrq.decode(codes[self.group])
        return self.features.inverse_block(modality, joint[:, self.features.slices()[modality]])

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.psrq.save(path / "psrq")
        self.features.save(path / "features.npz")
        (path / "config.json").write_text(json.dumps({"method": self.method, "dims": self.features.dims}) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> PSRQJointQuantizer:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        quantizer = cls()
        quantizer.psrq = PSRQQuantizer.load(path / "psrq")
        quantizer.features = JointFeatures.load(path / "features.npz", config["dims"])
        quantizer.codebook_sizes = {cls.group: quantizer.psrq.codebook_sizes}
        return quantizer
