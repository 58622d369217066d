"""The music tokenizer: one trained quantizer per modality (or one joint quantizer) + its config, as a directory.

`MusicTokenizer.load(dir)` returns it (a `JointTokenizer` for FusID, MusicRec, PSRQ modal-joint); `encode_store` turns
any run's embeddings into a TokenDB. The directory, written by tokenizer_ext.train: tokenizer.json, one checkpoint
folder per modality (or joint/), token_db.parquet + token_db.json, the split and the training log.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.registry import MODALITY_NAMES, get_modality
from data_gen.vectorize.embeddings import EmbeddingStore
from tokenizer_ext.config import TokenizerConfig
from tokenizer_ext.quantizers.base import JOINT_QUANTIZERS, QUANTIZERS, JointQuantizer, ModalityQuantizer
from tokenizer_ext.quantizers.fusid import FusIDQuantizer
from tokenizer_ext.quantizers.kmeans import KMeansQuantizer
from tokenizer_ext.quantizers.musicrec import MusicRecQuantizer
from tokenizer_ext.quantizers.psrq import PSRQJointQuantizer, PSRQQuantizer, RQKMeansQuantizer
from tokenizer_ext.quantizers.rqvae import RQVAEQuantizer, VQVAEQuantizer
from tokenizer_ext.token_db import TokenDB
from tokenizer_ext.tokens import MISSING

TOKENIZER_FILE = "tokenizer.json"


def build_quantizer(cfg: TokenizerConfig) -> ModalityQuantizer:
    """An untrained quantizer of cfg.method with cfg's settings."""
    if cfg.method in ("rqvae", "vqvae"):
        cls = RQVAEQuantizer if cfg.method == "rqvae" else VQVAEQuantizer
        return cls(d_z=cfg.d_z, hidden_dims=cfg.hidden_dims, codebook_sizes=cfg.codebook_sizes, beta=cfg.beta,
                   lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, epochs=cfg.epochs,
                   seed=cfg.seed, kmeans_init_iters=cfg.kmeans_init_iters, kmeans_init_rows=cfg.kmeans_init_rows,
                   dead_code_reset=cfg.dead_code_reset, device=cfg.device, encode_batch_rows=cfg.encode_chunk_rows,
                   standardize=cfg.standardize, standardize_scale=cfg.standardize_scale)
    if cfg.method == "kmeans":
        return KMeansQuantizer(num_clusters=cfg.codebook_sizes[0], seed=cfg.seed,
                               full_batch_max_rows=cfg.kmeans_full_batch_max_rows,
                               encode_batch_rows=cfg.encode_chunk_rows)
    if cfg.method in ("rqkmeans", "psrq"):
        cls = RQKMeansQuantizer if cfg.method == "rqkmeans" else PSRQQuantizer
        return cls(codebook_sizes=cfg.codebook_sizes, seed=cfg.seed, full_batch_max_rows=cfg.kmeans_full_batch_max_rows,
                   encode_batch_rows=cfg.encode_chunk_rows)
    raise ValueError(f"no per-modality quantizer for method {cfg.method!r}")


def build_joint_quantizer(cfg: TokenizerConfig) -> JointQuantizer:
    """An untrained joint (multi-modality) quantizer of cfg.method with cfg's settings."""
    if cfg.method == "psrq_joint":
        return PSRQJointQuantizer(codebook_sizes=cfg.codebook_sizes, seed=cfg.seed,
                                  full_batch_max_rows=cfg.kmeans_full_batch_max_rows,
                                  encode_batch_rows=cfg.encode_chunk_rows)
    if cfg.method == "fusid":
        return FusIDQuantizer(codebook_sizes=cfg.codebook_sizes, sub_embedding_dim=cfg.sub_embedding_dim,
                              fusion_hidden_dim=cfg.fusion_hidden_dim, reg_weight=cfg.reg_weight,
                              variance_target=cfg.variance_target, lr=cfg.lr, batch_size=cfg.batch_size,
                              epochs=cfg.epochs, seed=cfg.seed, full_batch_max_rows=cfg.kmeans_full_batch_max_rows,
                              device=cfg.device, encode_batch_rows=cfg.encode_chunk_rows)
    if cfg.method == "musicrec":
        return MusicRecQuantizer(codebook_sizes=cfg.codebook_sizes, shared_levels=cfg.shared_levels, d_z=cfg.d_z,
                                 hidden_dims=cfg.hidden_dims, beta=cfg.beta, align_weight=cfg.align_weight,
                                 relation_weight=cfg.relation_weight, align_temperature=cfg.align_temperature,
                                 align_modality=cfg.align_modality, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed,
                                 kmeans_init_iters=cfg.kmeans_init_iters, device=cfg.device,
                                 encode_batch_rows=cfg.encode_chunk_rows)
    raise ValueError(f"no joint quantizer for method {cfg.method!r}")


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
        if info.get("joint"):
            return JointTokenizer.load(path, device=device)
        config = TokenizerConfig(**info["config"])
        quantizer_cls = QUANTIZERS[info["method"]]
        quantizers = {m: quantizer_cls.load(path / m, device=device) for m in info["modalities"]}
        return cls(config, quantizers, info["dims"])


class JointTokenizer:
    """One joint quantizer over several modalities (FusID, MusicRec, PSRQ modal-joint) and its config.

    `modalities` are the code groups of its token database (e.g. SH, BM, ..., TC), `input_modalities` the embeddings
    it reads. A track with none of its input modalities gets MISSING codes in every group."""

    joint = True
    JOINT_DIR = "joint"

    def __init__(self, config: TokenizerConfig, quantizer: JointQuantizer, dims: dict[str, int]):
        self.config = config
        self.quantizer = quantizer
        self.dims = {m: int(dims[m]) for m in MODALITY_NAMES if m in dims}

    @property
    def input_modalities(self) -> tuple[str, ...]:
        return tuple(self.dims)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.quantizer.codebook_sizes)

    @property
    def codebook_sizes(self) -> dict[str, tuple[int, ...]]:
        return {g: tuple(s) for g, s in self.quantizer.codebook_sizes.items()}

    def can_decode(self, modality: str) -> bool:
        return modality in self.dims and type(self.quantizer).decode is not JointQuantizer.decode

    def decode_groups(self, codes: dict[str, np.ndarray], modality: str) -> np.ndarray:
        """{group: int [n, L]} codes of n tracks -> float32 [n, d_m] reconstruction of one modality."""
        return self.quantizer.decode(codes, modality)

    def read_inputs(self, store: EmbeddingStore, rows: np.ndarray | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A run's embeddings (all tracks, or `rows`) -> ({modality: float32 [n, d]}, {modality: bool [n]})."""
        available = store.modalities()
        n = store.num_tracks if rows is None else len(rows)
        x, present = {}, {}
        for m, d in self.dims.items():
            if m not in available:
                print(f"[{m}] no embeddings in {store.dir}: every track counts as missing it", file=sys.stderr)
                x[m], present[m] = np.zeros((n, d), np.float32), np.zeros(n, bool)
                continue
            if store.dim(m) != d:
                raise ValueError(f"{m}: embeddings are {store.dim(m)}-d, the tokenizer was trained on {d}-d")
            matrix, mask = store.load(m), store.presence(m)
            x[m] = np.asarray(matrix if rows is None else matrix[rows], np.float32)
            present[m] = np.asarray(mask if rows is None else mask[rows], bool)
        return x, present

    def encode_store(self, store: EmbeddingStore, disambiguate: bool | None = None,
                     chunk_rows: int | None = None) -> TokenDB:
        chunk_rows = chunk_rows or self.config.encode_chunk_rows
        n = store.num_tracks
        codes = {g: np.full((n, len(s)), MISSING, np.int32) for g, s in self.codebook_sizes.items()}
        for start in range(0, n, chunk_rows):
            rows = np.arange(start, min(n, start + chunk_rows))
            for g, c in self.quantizer.encode(*self.read_inputs(store, rows)).items():
                codes[g][rows] = c
        db = TokenDB(list(store.track_ids), self.codebook_sizes, codes, tokenizer=self.config.method,
                     meta={"embeddings": str(store.dir), "input_modalities": list(self.input_modalities)})
        disambiguate = self.config.disambiguate if disambiguate is None else disambiguate
        return db.with_disambiguation() if disambiguate else db

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.quantizer.save(out_dir / self.JOINT_DIR)
        info = {"method": self.config.method, "joint": True, "config": asdict(self.config.tokenizer_config()),
                "modalities": list(self.modalities), "input_modalities": list(self.input_modalities),
                "codebook_sizes": {g: list(s) for g, s in self.codebook_sizes.items()}, "dims": self.dims}
        (out_dir / TOKENIZER_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> JointTokenizer:
        path = Path(path)
        info = json.loads((path / TOKENIZER_FILE).read_text())
        config = TokenizerConfig(**info["config"])
        quantizer = JOINT_QUANTIZERS[info["method"]].load(path / cls.JOINT_DIR, device=device)
        return cls(config, quantizer, info["dims"])
