"""The music tokenizer: one trained quantizer per modality + its config, saved as a directory; embeddings -> codes.

Directory layout (written by `python -m tokenizer_ext.train`, read by `MusicTokenizer.load`):
    tokenizer.json      method, config, modalities, codebook sizes and embedding dim per modality
    <MOD>/              one quantizer checkpoint per modality (config.json + model.pt or centroids.npy)
    token_db.parquet    codes of every catalog track (see tokenizer_ext/token_db.py), + token_db.json
    split.json, test_tracks.txt, train_log.jsonl, manifest.json   what training did
`encode_store` turns any run's embeddings (e.g. new tracks) into a TokenDB with the same tokenizer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data_gen.embeddings import EmbeddingStore
from data_gen.registry import MODALITY_NAMES, get_modality
from tokenizer_ext.base import QUANTIZERS, ModalityQuantizer
from tokenizer_ext.config import TokenizerConfig
from tokenizer_ext.kmeans import KMeansQuantizer
from tokenizer_ext.rqvae import RQVAEQuantizer, VQVAEQuantizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING

TOKENIZER_FILE = "tokenizer.json"


def build_quantizer(cfg: TokenizerConfig) -> ModalityQuantizer:
    """An untrained quantizer of cfg.method with cfg's settings."""
    if cfg.method in ("rqvae", "vqvae"):
        cls = RQVAEQuantizer if cfg.method == "rqvae" else VQVAEQuantizer
        return cls(d_z=cfg.d_z, hidden_dims=cfg.hidden_dims, codebook_sizes=cfg.codebook_sizes, beta=cfg.beta,
                   lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, epochs=cfg.epochs,
                   seed=cfg.seed, kmeans_init_iters=cfg.kmeans_init_iters, dead_code_reset=cfg.dead_code_reset,
                   device=cfg.device, encode_batch_rows=cfg.encode_chunk_rows, standardize=cfg.standardize)
    if cfg.method == "kmeans":
        return KMeansQuantizer(num_clusters=cfg.codebook_sizes[0], seed=cfg.seed,
                               full_batch_max_rows=cfg.kmeans_full_batch_max_rows,
                               encode_batch_rows=cfg.encode_chunk_rows)
    raise ValueError(f"no quantizer for method {cfg.method!r}")


class MusicTokenizer:
    """Per-modality quantizers (registry order) and the config they were trained with."""

    def __init__(self, config: TokenizerConfig, quantizers: dict[str, ModalityQuantizer], dims: dict[str, int]):
        self.config = config
        self.quantizers = {m: quantizers[m] for m in MODALITY_NAMES if m in quantizers}
        self.dims = {m: int(dims[m]) for m in self.quantizers}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.quantizers)

    @property
    def codebook_sizes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(q.codebook_sizes) for m, q in self.quantizers.items()}

    def _quantizer(self, modality: str) -> ModalityQuantizer:
        name = get_modality(modality).name
        if name not in self.quantizers:
            raise KeyError(f"this tokenizer has no {name} quantizer (it has {', '.join(self.modalities)})")
        return self.quantizers[name]

    def encode(self, modality: str, x: np.ndarray) -> np.ndarray:
        """float32 [n, d] embeddings of present tracks -> int64 [n, L] codes."""
        name = get_modality(modality).name
        if x.ndim != 2 or x.shape[1] != self.dims.get(name, x.shape[1]):
            raise ValueError(f"{name}: expected [n, {self.dims.get(name)}] embeddings, got {list(x.shape)}")
        return self._quantizer(name).encode(x)

    def decode(self, modality: str, codes: np.ndarray) -> np.ndarray:
        """int [n, L] codes -> float32 [n, d] reconstruction."""
        return self._quantizer(modality).decode(codes)

    def encode_store(self, store: EmbeddingStore, disambiguate: bool | None = None,
                     chunk_rows: int | None = None) -> TokenDB:
        """Every track of a run's embeddings -> TokenDB; a track without a modality gets -1 codes there.

        Matrices are read memory-mapped in chunks, and only rows whose presence is True are encoded (a missing
        modality's fill row is not data and must not become a code)."""
        chunk_rows = chunk_rows or self.config.encode_chunk_rows
        n = store.num_tracks
        available = store.modalities()
        codes: dict[str, np.ndarray] = {}
        for m, quantizer in self.quantizers.items():
            out = np.full((n, len(quantizer.codebook_sizes)), MISSING, dtype=np.int32)
            if m not in available:
                print(f"[{m}] no embeddings in {store.dir}: every track gets <{m}-none>", file=sys.stderr)
                codes[m] = out
                continue
            if store.dim(m) != self.dims[m]:
                raise ValueError(f"{m}: embeddings are {store.dim(m)}-d, the tokenizer was trained on {self.dims[m]}-d")
            matrix, present = store.load(m), store.presence(m)
            for start in range(0, n, chunk_rows):
                rows = np.flatnonzero(present[start:start + chunk_rows])
                if len(rows):
                    chunk = np.asarray(matrix[start:start + chunk_rows])
                    out[start + rows] = quantizer.encode(chunk[rows])
            codes[m] = out
        db = TokenDB(list(store.track_ids), self.codebook_sizes, codes, tokenizer=self.config.method,
                     meta={"embeddings": str(store.dir)})
        disambiguate = self.config.disambiguate if disambiguate is None else disambiguate
        return db.with_disambiguation() if disambiguate else db

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for m, quantizer in self.quantizers.items():
            quantizer.save(out_dir / m)
        info = {"method": self.config.method, "config": asdict(self.config.tokenizer_config()),
                "modalities": list(self.modalities),
                "codebook_sizes": {m: list(s) for m, s in self.codebook_sizes.items()}, "dims": self.dims}
        (out_dir / TOKENIZER_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> MusicTokenizer:
        path = Path(path)
        if not (path / TOKENIZER_FILE).exists():
            raise FileNotFoundError(f"{path}: no {TOKENIZER_FILE} (train one with `python -m tokenizer_ext.train`)")
        info = json.loads((path / TOKENIZER_FILE).read_text())
        config = TokenizerConfig(**info["config"])
        quantizer_cls = QUANTIZERS[info["method"]]
        quantizers = {m: quantizer_cls.load(path / m, device=device) for m in info["modalities"]}
        return cls(config, quantizers, info["dims"])
