"""Shared fixtures: the real data in ../shared/data (skip where absent, fail under CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPOTIFY_CSV = SHARED_DATA / "spotify_songs" / "spotify_songs.csv"


def require_shared(path: Path) -> Path:
    if path.exists():
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{path} is missing: CI must run with ../shared/data beside the repository")
    pytest.skip(f"real data not available at {path}")


@pytest.fixture(scope="session")
def spotify_csv() -> Path:
    return require_shared(SPOTIFY_CSV)
