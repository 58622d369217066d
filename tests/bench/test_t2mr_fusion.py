"""bench.t2mr_fusion: reciprocal-rank fusion of saved T2MR rankings, scored against the playlists, pooled over sets."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.t2mr_fusion import fused_precision, main, rrf

IDS = [f"t{i:02d}" for i in range(40)]


def _set(tmp_path, name: str, a: list[str], b: list[str], playlist: list[str]):
    """A run (catalog of IDS), one playlist, and a t2mr.json where systems A and B rank the given lists."""
    run = tmp_path / name
    run.mkdir()
    pq.write_table(pa.table({"track_id": IDS}), run / "catalog.parquet")
    playlists = run / "playlists.jsonl"
    playlists.write_text(json.dumps({"playlist_id": "p", "name": "rainy day", "tracks": playlist + ["not-in-catalog"]})
                         + "\n")
    result = run / "t2mr.json"
    result.write_text(json.dumps({"config": {"run_dir": str(run)}, "query_texts": ["rainy day"],
                                  "systems": {"A": {"ranked_track_ids": [a]}, "B": {"ranked_track_ids": [b]}}}))
    return f"{result}={playlists}"


def test_rrf_interleaves_and_rewards_agreement():
    assert rrf([["x", "y"], ["z", "y"]]) == ["y", "x", "z"]  # y: 1/62 + 1/62 beats x's 1/61
    assert rrf([["x", "y"], ["y", "x"]], rrf_k=1) == ["x", "y"]  # a tie keeps the first list's order


def test_fusion_of_two_half_right_lists_finds_the_whole_playlist(tmp_path, capsys):
    relevant = IDS[:10]
    a = IDS[:5] + IDS[20:25]  # five relevant tracks first, then five others
    b = IDS[5:10] + IDS[30:35]
    spec = _set(tmp_path, "f1", a, b, relevant)
    result, playlists = spec.split("=")
    p = fused_precision(result, playlists, [("a", "A"), ("b", "B")])
    assert p == {"a": [0.5], "b": [0.5], "a+b": [1.0]}
    # pooled over two sets: in the second, B has all ten and A the last five of them first
    spec2 = _set(tmp_path, "f2", IDS[5:10] + IDS[20:25], IDS[:10], relevant)
    main(["--sets", spec, spec2, "--systems", "a=A", "b=B", "--reference", "a", "--out", str(tmp_path / "t.md")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| a+b | 2 | 2 | 1.0000 |") and lines[3].startswith("| b | 2 | 2 | 0.7500 |")
    assert lines[4].startswith("| a | 2 | 2 | 0.5000 |") and (tmp_path / "t.md").read_text().splitlines() == lines


def test_requests_must_be_those_the_result_scored(tmp_path):
    spec = _set(tmp_path, "f1", IDS[:10], IDS[10:20], IDS[:10])
    result, playlists = spec.split("=")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"playlist_id": "q", "name": "sunny day", "tracks": IDS[:3]}) + "\n")
    with pytest.raises(SystemExit, match="not those of"):
        fused_precision(result, other, [("a", "A")])
    with pytest.raises(SystemExit, match="no ranking of system 'C'"):
        fused_precision(result, playlists, [("c", "C")])
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        main(["--sets", spec, "--systems", "A"])
