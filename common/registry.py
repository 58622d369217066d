"""The modality registry: the nine modalities of 3MToken, in the paper's order, with their inputs and sizes.

This module is the single source of truth for modality names, order, kinds, catalog input fields, embedding
dimensions and default per-level codebook sizes. Every other module imports it; nothing else lists modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

# 3MToken Sec. 3 / Appendix B: L = 3 codebooks of sizes (32, 64, 128) -> 224 tokens per modality.
DEFAULT_CODEBOOK_SIZES: tuple[int, ...] = (32, 64, 128)

# Appendix A: release-date vector = year_norm, sin/cos month, sin/cos day, 11 decade bins, imputation, availability.
RI_DIM = 18
RI_YEAR_MIN, RI_YEAR_MAX = 1910, 2025
RI_DECADE_EDGES = tuple(range(1930, 2030, 10))  # pre-1930, 1930s, ..., 2020s -> 11 bins

# Appendix A: one-hot tempo over 30..249 BPM (220 bins) + one imputation bin; 24 keys (12 pitch classes x
# major/minor) + one unknown slot. The paper's prose sums to 221 + 25 = 246 (its table says 247); we follow the prose.
MC_TEMPO_MIN, MC_TEMPO_MAX = 30, 249
MC_TEMPO_BINS = MC_TEMPO_MAX - MC_TEMPO_MIN + 1  # 220
MC_KEY_SLOTS = 25
MC_DIM = MC_TEMPO_BINS + 1 + MC_KEY_SLOTS  # 246

TC_DIM = 128  # Appendix A: session-based track2vec, 128-d


@dataclass(frozen=True)
class Modality:
    """One modality of the registry.

    kind: how raw fields become a vector: "text" (sentence encoder), "audio" (feature vector or CLAP),
    "musical" (tempo/key one-hot), "date" (release-date vector), "collaborative" (track2vec over playlists).
    fields: catalog columns this modality reads (see data_gen/catalog/reader.py).
    dim: fixed embedding dim, or None when it depends on the encoder / input (text encoder, audio features).
    paper_dim: the dim the 3MToken paper reports (Appendix A) for reference.
    """

    name: str
    title: str
    kind: str
    fields: tuple[str, ...]
    dim: int | None
    paper_dim: int
    codebook_sizes: tuple[int, ...] = DEFAULT_CODEBOOK_SIZES

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def num_tokens(self) -> int:
        return sum(self.codebook_sizes)


MODALITIES: tuple[Modality, ...] = (
    Modality("AC", "Artist Roles & Collaborations", "text", ("artist_roles",), None, 4096),
    Modality("BM", "Basic Metadata", "text", ("title", "artist", "album"), None, 4096),
    Modality("ST", "Semantic Tags", "text", ("tags",), None, 4096),
    Modality("SC", "Sonic Characteristics", "audio", ("audio_features", "audio_path"), None, 128),
    Modality("MC", "Musical Characteristics", "musical", ("tempo", "key", "mode"), MC_DIM, 247),
    Modality("RI", "Release Information", "date", ("release_date",), RI_DIM, 18),
    Modality("SF", "Song Facts", "text", ("song_facts",), None, 4096),
    Modality("AB", "Artist Biography", "text", ("artist_bio",), None, 4096),
    Modality("TC", "Track Consumption", "collaborative", (), TC_DIM, 128),
)

MODALITY_NAMES: tuple[str, ...] = tuple(m.name for m in MODALITIES)
_BY_NAME = {m.name: m for m in MODALITIES}


def get_modality(name: str) -> Modality:
    """Look a modality up by its short name (case-insensitive), with a clear error for unknown names."""
    try:
        return _BY_NAME[name.upper()]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; known modalities: {', '.join(MODALITY_NAMES)}") from None


def parse_modalities(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """'AC,BM' or ['AC', 'BM'] or None (all) -> names in registry order, validated."""
    if spec is None or spec == "" or spec == "all":
        return MODALITY_NAMES
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    wanted = {get_modality(s.strip()).name for s in items if s.strip()}
    return tuple(n for n in MODALITY_NAMES if n in wanted)


def modality_index(name: str) -> int:
    """Position of a modality in the paper's order (AC=0 ... TC=8)."""
    return MODALITY_NAMES.index(get_modality(name).name)
