"""K-means baseline of 3MToken (Sec. 3): one modality's embeddings float32 [n, d] -> one cluster id [n, 1].

1024 clusters per modality; a track is reconstructed as its centroid (App. C). scikit-learn KMeans up to
`full_batch_max_rows` training rows, MiniBatchKMeans above (its cost per step does not grow with the catalog).
K is clipped to the number of distinct training rows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin

from tokenizer_ext.quantizers.base import ModalityQuantizer, read_checkpoint_config, register


@register("kmeans")
class KMeansQuantizer(ModalityQuantizer):
    """K-means clusters of one modality; code = nearest centroid, decode = centroid."""

    epochs = 1  # one fit, logged as one "epoch" so the training command treats every method alike

    def __init__(self, num_clusters: int = 1024, seed: int = 0, full_batch_max_rows: int = 65536,
                 minibatch_size: int = 4096, encode_batch_rows: int = 65536):
        self.num_clusters = num_clusters
        self.codebook_sizes = (num_clusters,)
        self.settings = {"num_clusters": num_clusters, "seed": seed, "full_batch_max_rows": full_batch_max_rows,
                         "minibatch_size": minibatch_size, "encode_batch_rows": encode_batch_rows}
        self.centroids: np.ndarray | None = None  # float32 [K, d]

    def fit(self, x_train: np.ndarray, x_val: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None) -> None:
        s = self.settings
        x = np.ascontiguousarray(x_train, dtype=np.float32)
        k, note = self.num_clusters, None
        # counting distinct rows sorts the data, so only where clipping is plausible (few rows per cluster)
        distinct = len(np.unique(x, axis=0)) if len(x) < 4 * k else len(x)
        if distinct < k:
            k = distinct
            note = f"K clipped from {self.num_clusters} to {k}: {len(x)} training rows, {distinct} distinct"
            print(f"[kmeans] {note}", file=sys.stderr)
        if k < 1:
            raise ValueError("k-means needs at least one training row")
        if len(x) <= s["full_batch_max_rows"]:
            model = KMeans(n_clusters=k, n_init=1, random_state=s["seed"])
        else:
            model = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=s["seed"],
                                    batch_size=max(s["minibatch_size"], 3 * k))
        model.fit(x)
        self.centroids = model.cluster_centers_.astype(np.float32)
        self.codebook_sizes = (k,)
        labels = self.encode(x)[:, 0]
        recon = float(np.mean((self.centroids[labels] - x) ** 2))
        if log is not None:
            log({"epoch": 1, "loss": recon, "recon": recon, "codebook": 0.0, "commitment": 0.0,
                 "dead_codes": [int((np.bincount(labels, minlength=k) == 0).sum())],
                 "val_recon": self.reconstruction_mse(x_val) if x_val is not None and len(x_val) else None,
                 "algorithm": type(model).__name__, "note": note})

    def reconstruction_mse(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float32)
        return float(np.mean((self.decode(self.encode(x)) - x) ** 2))

    def _check_fitted(self) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("kmeans quantizer is not trained or loaded")
        return self.centroids

    def encode(self, x: np.ndarray) -> np.ndarray:
        centroids = self._check_fitted()
        step = self.settings["encode_batch_rows"]
        out = [pairwise_distances_argmin(np.asarray(x[i:i + step], dtype=np.float32), centroids)
               for i in range(0, len(x), step)]
        return (np.concatenate(out) if out else np.zeros(0, np.int64)).astype(np.int64)[:, None]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self._check_fitted()[np.asarray(codes)[:, 0]]

    def save(self, path: str | Path) -> None:
        centroids = self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "centroids.npy", centroids)
        (path / "config.json").write_text(json.dumps({"method": self.method, "d_in": int(centroids.shape[1]),
                                                      "fitted_clusters": len(centroids), **self.settings},
                                                     indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> KMeansQuantizer:
        path = Path(path)
        config, _ = read_checkpoint_config(cls, path, pop=("d_in", "fitted_clusters"))
        quantizer = cls(**config)
        quantizer.centroids = np.load(path / "centroids.npy")
        quantizer.codebook_sizes = (len(quantizer.centroids),)
        return quantizer
