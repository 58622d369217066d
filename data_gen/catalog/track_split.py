"""Train/test split of tracks for tokenizer training: track_ids + (test_fraction, seed) -> boolean is_test mask.

The split hashes each track_id with the seed, so it is deterministic, independent of catalog order, and stable
when tracks are added (a track never moves between train and test). 3MToken trains on 80% and tests on 20%.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def is_test_track(track_id: str, test_fraction: float, seed: int) -> bool:
    digest = hashlib.sha1(f"{seed}:{track_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def split_tracks(track_ids: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """-> bool [N], True for test tracks."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    return np.fromiter((is_test_track(t, test_fraction, seed) for t in track_ids), dtype=bool, count=len(track_ids))
