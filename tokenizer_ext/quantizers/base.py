"""The quantizer interfaces: one modality's embeddings [n, d] -> codes [n, L] (ModalityQuantizer), or all
modalities of a track at once -> codes per code group (JointQuantizer).

Per-modality methods (RQ-VAE, VQ-VAE, K-means, RQ-KMeans, PSRQ) register in QUANTIZERS, joint ones (FusID, MusicRec
shared-specific RQ, PSRQ modal-joint) in JOINT_QUANTIZERS, so training, the token database and every evaluation treat
them alike. Joint groups (SH, MJ, FU) and their order are defined in tokenizer_ext/tokens.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

QUANTIZERS: dict[str, type[ModalityQuantizer]] = {}
JOINT_QUANTIZERS: dict[str, type[JointQuantizer]] = {}


def _registrar(registry: dict):
    """A class decorator factory: @register(name) sets cls.method and files cls in `registry`."""
    def register_as(name: str):
        def wrap(cls):
            cls.method = name
            registry[name] = cls
            return cls
        return wrap
    return register_as


register = _registrar(QUANTIZERS)


def read_checkpoint_config(cls: type, path: str | Path, device: str | None = None, pop: tuple[str, ...] = ()
                           ) -> tuple[dict, dict]:
    """A quantizer checkpoint's config.json -> (constructor settings, the values of the `pop` keys).

    Checks that the checkpoint was written by `cls.method`; `device`, when given, replaces the saved device."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if config.pop("method") != cls.method:
        raise ValueError(f"{path}: not a {cls.method} checkpoint")
    popped = {k: config.pop(k) for k in pop}
    if device is not None:
        config["device"] = device
    return config, popped


class ModalityQuantizer:
    """One modality's quantizer. `codebook_sizes` has one entry per level (K_1, ..., K_L)."""

    method: str = ""
    codebook_sizes: tuple[int, ...] = ()

    def fit(self, x_train: np.ndarray, x_val: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None) -> None:
        """Train on float32 [n, d] rows (present tracks only); `log` receives one dict per epoch."""
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, d] -> int64 [n, L] codes."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int [n, L] codes -> float32 [n, d] reconstruction in the embedding space."""
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> ModalityQuantizer:
        raise NotImplementedError


register_joint = _registrar(JOINT_QUANTIZERS)


class JointQuantizer:
    """All modalities of a track -> codes per code group: {group: int64 [n, L_group]} (MISSING rows where a group
    does not apply, e.g. a modality-specific group of a track without that modality).

    Inputs are {modality: float32 [n, d_m]} with presence masks {modality: bool [n]}; rows of absent modalities hold
    no data and must not be read. `pairs` (int [P, 2] row indices into the training inputs) are co-occurring tracks
    of the training playlists, for methods that learn from them. The joint groups are listed in tokens.py."""

    method: str = ""
    codebook_sizes: dict[str, tuple[int, ...]] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.codebook_sizes)

    def fit(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], pairs: np.ndarray | None = None,
            log: Callable[[dict], None] | None = None, pair_scores: np.ndarray | None = None) -> None:
        """Train on the training tracks; `pair_scores` float [P] weighs `pairs` (normalised co-occurrence)."""
        raise NotImplementedError

    def encode(self, x: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decode(self, codes: dict[str, np.ndarray], modality: str) -> np.ndarray:
        """{group: int [n, L]} codes -> float32 [n, d_m] reconstruction of one modality; NotImplementedError where
        the method has no decoder (FusID)."""
        raise NotImplementedError(f"{self.method} has no decoder")

    def save(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> JointQuantizer:
        raise NotImplementedError
