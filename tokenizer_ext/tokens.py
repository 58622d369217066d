"""The token format: (code group, level, code index) <-> token strings such as `<SC1-5>`, and the music vocabulary.

    `<MOD{level}-{index}>`  level 1-based, index 0-based: `<SC1-5>` = SC, level 1, code 5
    `<MOD-none>`            the group is missing for this track (replaces its L level tokens)
    `<ID-{k}>`              optional disambiguation: the k-th track sharing an identical code sequence
    `<begin_3MToken>` / `<end_3MToken>`  around a track's sequence
A sequence lists the tokenizer's code groups in GROUP_NAMES order: the joint groups first (SH MusicRec shared,
MJ PSRQ modal-joint, FU FusID sub-embeddings), then the modalities AC ... TC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from common.registry import MODALITY_NAMES, get_modality

BEGIN_TOKEN = "<begin_3MToken>"
END_TOKEN = "<end_3MToken>"
BOUNDARY_TOKENS = (BEGIN_TOKEN, END_TOKEN)
MISSING = -1  # code value stored in the token database for a missing modality

# The joint groups and the global order of every group in a track's sequence: the one place that lists them.
JOINT_GROUPS: dict[str, str] = {"SH": "MusicRec shared levels", "MJ": "PSRQ modal-joint levels",
                                "FU": "FusID sub-embeddings (level j = sub-embedding j)"}
GROUP_NAMES: tuple[str, ...] = (*JOINT_GROUPS, *MODALITY_NAMES)

_MUSIC = re.compile(r"^<([A-Z]{2})(\d+)-(\d+)>$")
_NONE = re.compile(r"^<([A-Z]{2})-none>$")
_DEDUP = re.compile(r"^<ID-(\d+)>$")


def get_group(name: str) -> str:
    """A group name (modality or joint group, case-insensitive) -> its canonical name; KeyError for unknown names."""
    upper = name.upper()
    if upper in JOINT_GROUPS:
        return upper
    try:
        return get_modality(upper).name
    except KeyError:
        raise KeyError(f"unknown code group {name!r}; known groups: {', '.join(GROUP_NAMES)}") from None


def is_joint_group(name: str) -> bool:
    return name.upper() in JOINT_GROUPS


def music_token(modality: str, level: int, index: int) -> str:
    """('SC', 1, 5) -> '<SC1-5>' (level is 1-based, index 0-based)."""
    if level < 1 or index < 0:
        raise ValueError(f"level must be >= 1 and index >= 0, got level={level}, index={index}")
    return f"<{get_group(modality)}{level}-{index}>"


def missing_token(modality: str) -> str:
    return f"<{get_group(modality)}-none>"


def dedup_token(k: int) -> str:
    return f"<ID-{k}>"


def parse_token(token: str) -> tuple[str, int, int] | tuple[str, None, None] | tuple[None, None, int]:
    """'<SC1-5>' -> ('SC', 1, 5); '<SC-none>' -> ('SC', None, None); '<ID-3>' -> (None, None, 3).

    Raises ValueError for anything else (including unknown groups)."""
    if m := _MUSIC.match(token):
        return get_group(m.group(1)), int(m.group(2)), int(m.group(3))
    if m := _NONE.match(token):
        return get_group(m.group(1)), None, None
    if m := _DEDUP.match(token):
        return None, None, int(m.group(1))
    raise ValueError(f"not a music token: {token!r}")


def music_vocabulary(codebook_sizes: Mapping[str, Sequence[int]]) -> list[str]:
    """All `<MOD{l}-{i}>` tokens, groups in GROUP_NAMES order, levels in order: 9 x 224 = 2,016 by default."""
    unknown = set(codebook_sizes) - set(GROUP_NAMES)
    if unknown:
        raise KeyError(f"unknown code groups {sorted(unknown)}")
    return [music_token(m, level, i)
            for m in GROUP_NAMES if m in codebook_sizes
            for level, size in enumerate(codebook_sizes[m], start=1)
            for i in range(size)]


def special_vocabulary(modalities: Sequence[str], max_dedup: int = 0) -> list[str]:
    """The non-code tokens a tokenizer needs: boundaries, one `<MOD-none>` per group, `<ID-k>` for k < max_dedup."""
    ordered = [m for m in GROUP_NAMES if m in set(modalities)]
    return [*BOUNDARY_TOKENS, *(missing_token(m) for m in ordered), *(dedup_token(k) for k in range(max_dedup))]


def codes_to_tokens(codes: Mapping[str, Sequence[int]], dedup: int | None = None, boundaries: bool = True) -> list[str]:
    """{group: [c1..cL] or [-1..-1]} -> token strings in GROUP_NAMES order (+ `<ID-k>`, + boundaries)."""
    out = [BEGIN_TOKEN] if boundaries else []
    for m in GROUP_NAMES:
        if m not in codes:
            continue
        levels = [int(c) for c in codes[m]]
        if all(c == MISSING for c in levels):
            out.append(missing_token(m))
        elif any(c == MISSING for c in levels):
            raise ValueError(f"{m}: partially missing codes {levels}")
        else:
            out.extend(music_token(m, level, c) for level, c in enumerate(levels, start=1))
    if dedup is not None:
        out.append(dedup_token(dedup))
    if boundaries:
        out.append(END_TOKEN)
    return out


def tokens_to_codes(tokens: Sequence[str], num_levels: Mapping[str, int]) -> tuple[dict[str, list[int]], int | None]:
    """Inverse of codes_to_tokens: token strings (boundaries optional) -> ({group: codes}, dedup or None).

    Raises ValueError on tokens out of order, levels out of order, or groups not in `num_levels`."""
    body = list(tokens)
    if body and body[0] == BEGIN_TOKEN:
        body = body[1:]
    if body and body[-1] == END_TOKEN:
        body = body[:-1]
    codes: dict[str, list[int]] = {}
    dedup = None
    last_rank = -1
    for tok in body:
        modality, level, index = parse_token(tok)
        if modality is None:
            if dedup is not None:
                raise ValueError("more than one <ID-k> token")
            dedup = index
            continue
        if dedup is not None:
            raise ValueError(f"{tok} after the <ID-k> token")
        if modality not in num_levels:
            raise ValueError(f"{tok}: modality {modality} is not in this tokenizer")
        rank = GROUP_NAMES.index(modality)
        if level is None:
            if modality in codes or rank <= last_rank:
                raise ValueError(f"{tok} out of order")
            codes[modality] = [MISSING] * num_levels[modality]
            last_rank = rank
            continue
        current = codes.setdefault(modality, []) if rank >= last_rank else None
        if current is None or (rank > last_rank and current) or level != len(current) + 1:
            raise ValueError(f"{tok} out of order")
        current.append(index)
        last_rank = rank
    for m, levels in codes.items():
        if len(levels) != num_levels[m]:
            raise ValueError(f"{m}: {len(levels)} levels, expected {num_levels[m]}")
    return codes, dedup
