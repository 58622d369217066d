import json
import subprocess
import sys

import numpy as np
import pyarrow as pa

from data_gen.catalog.playlists import Playlist, write_playlists
from data_gen.vectorize.consumption import Track2VecVectorizer


def _two_communities(path):
    rock = [f"r{i}" for i in range(30)]
    jazz = [f"j{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    playlists = [Playlist(f"p{k}", "", list(rng.choice(rock if k % 2 else jazz, 12, replace=False)))
                 for k in range(60)]
    playlists.append(Playlist("held-out", "eval", ["only-in-eval-1", "only-in-eval-2", "r0"]))
    write_playlists(playlists, path)
    return rock, jazz


def test_track2vec_learns_co_occurrence_and_respects_exclusions(tmp_path):
    rock, jazz = _two_communities(tmp_path / "pl.jsonl")
    vec = Track2VecVectorizer(tmp_path / "pl.jsonl", exclude={"held-out"}, epochs=10, seed=1)
    vec.fit()
    ids = rock + jazz + ["only-in-eval-1", "unknown"]
    emb, present = vec.transform(pa.RecordBatch.from_pylist([{"track_id": t} for t in ids]))
    assert emb.shape == (62, 128) and present.tolist() == [True] * 60 + [False, False]
    assert not emb[60:].any()
    np.testing.assert_allclose(np.linalg.norm(emb[:60], axis=1), 1.0, atol=1e-5)
    sims = emb[:60] @ emb[:60].T
    within = (sims[:30, :30].sum() - 30 + sims[30:, 30:].sum() - 30) / (2 * 30 * 29)
    across = sims[:30, 30:].mean()
    assert within > across + 0.3, (within, across)
    assert vec.state()["playlists_used"] == 60 and vec.state()["playlists_excluded"] == 1


def test_track2vec_is_reproducible_across_processes(tmp_path):
    _two_communities(tmp_path / "pl.jsonl")
    code = (
        "import sys, json; from data_gen.vectorize.consumption import Track2VecVectorizer as T;"
        "v = T(sys.argv[1], epochs=2, seed=3); v.fit(); print(json.dumps(v.vectors['r1'][:5].tolist()))"
    )
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "pl.jsonl")], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
            for seed in ("1", "2")]
    assert json.loads(outs[0]) == json.loads(outs[1])
