"""Playlist splits by id: fold 0 is the plain seeded split; folds of one seed are disjoint (cross-validation)."""

import pytest

from data_gen.catalog.playlists import Playlist, split_playlists


def _playlists(n):
    return [Playlist(playlist_id=f"p{i:03d}", name=f"list {i}", tracks=[f"t{i}"]) for i in range(n)]


def test_folds_of_one_seed_are_disjoint_and_fold_zero_is_the_plain_split():
    pl = _playlists(100)
    folds = [split_playlists(pl, 0.2, seed=7, fold=f) for f in range(5)]
    assert folds[0] == split_playlists(pl, 0.2, seed=7)
    held = [set(ev) for _, ev in folds]
    assert all(len(h) == 20 for h in held) and len(set().union(*held)) == 100  # 5 folds cover every playlist
    for f, (train, ev) in enumerate(folds):
        assert set(train).isdisjoint(ev) and len(train) + len(ev) == 100
        for g in range(f):
            assert held[f].isdisjoint(held[g]), (f, g)
    assert split_playlists(pl, 0.2, seed=8, fold=1) != folds[1]


def test_a_fold_beyond_the_playlists_is_refused():
    with pytest.raises(ValueError, match="fold must be in"):
        split_playlists(_playlists(10), 0.2, seed=0, fold=5)
    with pytest.raises(ValueError, match="fold must be in"):
        split_playlists(_playlists(103), 0.2, seed=0, fold=4)  # 21 per fold: only 4 whole folds
