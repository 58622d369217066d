"""The Spotify Songs loader on the real CSV in ../shared/data, plus its error and download paths."""

import csv
import functools
import http.server
import json
import threading

import pyarrow.parquet as pq
import pytest

from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.catalog.reader import RowError
from data_gen.catalog.sources.spotify import SC_FEATURES, download_spotify, load_spotify


@pytest.fixture(scope="module")
def spotify_run(spotify_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("spotify")
    counts = ingest_run(IngestConfig(run_dir=str(run_dir), source="spotify", input=str(spotify_csv)))
    return run_dir, counts


def test_counts_reconcile_with_the_csv(spotify_csv, spotify_run):
    run_dir, counts = spotify_run
    with open(spotify_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    unique = {r["track_id"] for r in rows}
    assert len(rows) == 31679 and len(unique) == 28356
    src = counts["source_counts"]
    assert src["csv_rows"] == len(rows) and src["unique_tracks"] == len(unique)
    assert src["csv_rows"] == src["unique_tracks"] + src["membership_rows_merged"] + src["rows_rejected_here"]
    assert (counts["read"], counts["kept"], counts["rejected"]) == (28356, 28356, 0)
    assert pq.ParquetFile(run_dir / "catalog.parquet").metadata.num_rows == 28356
    playlist_ids = {r["playlist_id"] for r in rows if r["playlist_id"]}
    assert counts["playlists"] == len(playlist_ids) == 384
    pairs = {(r["playlist_id"], r["track_id"]) for r in rows if r["playlist_id"]}
    assert counts["playlist_entries"] == len(pairs)


def test_field_mapping_on_real_rows(spotify_run):
    run_dir, _ = spotify_run
    table = pq.read_table(run_dir / "catalog.parquet").to_pylist()
    by_id = {r["track_id"]: r for r in table}
    ed = by_id["6f807x0ima9a1j3VPbc7VN"]  # first row of the CSV
    assert ed["artist"] == "Ed Sheeran" and ed["release_date"] == "2019-06-14"
    assert ed["tempo"] == pytest.approx(122.036) and (ed["key"], ed["mode"]) == (6, 1)
    assert len(ed["audio_features"]) == len(SC_FEATURES) == 9
    assert ed["audio_features"][-1] == pytest.approx(194754 / 60000, rel=1e-5)
    assert ed["tags"] is None and ed["genre"] is None  # its only playlist was withheld: no labels
    # R's "NA" is missing data, not a song called NA
    assert sum(r["title"] is None for r in table) == 4
    assert all(r["tempo"] is None or r["tempo"] > 0 for r in table)  # Spotify's tempo 0 = not detected
    assert sum(r["tempo"] is None for r in table) == 1
    assert {len(r["release_date"]) for r in table} == {4, 7, 10}
    assert sum(r["tags"] is not None for r in table) == 23088
    assert all(r["audio_features"] is not None for r in table)


def test_exclude_tag_playlists_removes_their_labels(spotify_csv, tmp_path):
    records, playlists, _ = load_spotify(spotify_csv)
    records_ex, _, _ = load_spotify(spotify_csv, exclude_tag_playlists={p.playlist_id for p in playlists})
    assert sum(r.get("tags") is not None for _, r in records) == 23088
    assert all(r.get("tags") is None for _, r in records_ex)
    assert all(r["genre"] == r2["genre"] for (_, r), (_, r2) in zip(records, records_ex))  # label kept for eval


def test_conflicting_rows_of_a_track_name_the_row_and_field(tmp_path, spotify_csv):
    with open(spotify_csv, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        first = next(reader)
    second = list(first)
    second[header.index("tempo")] = "99.0"
    second[header.index("playlist_id")] = "another"
    path = tmp_path / "s.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, first, second])
    records, _, counts = load_spotify(path)
    errors = [r for _, r in records if isinstance(r, RowError)]
    assert len(errors) == 1 and (errors[0].row, errors[0].field) == (2, "tempo")
    assert counts == {"csv_rows": 2, "unique_tracks": 1, "membership_rows_merged": 0, "rows_rejected_here": 1,
                      "playlists": 0}  # the rejected row brings no membership
    with pytest.raises(RowError, match=r"s.csv: row 2: field 'tempo'"):
        ingest_run(IngestConfig(run_dir=str(tmp_path / "run"), source="spotify", input=str(path)))
    counts = ingest_run(IngestConfig(run_dir=str(tmp_path / "run"), source="spotify", input=str(path),
                                     on_error="skip"))
    assert (counts["read"], counts["kept"], counts["rejected"]) == (2, 1, 1)
    rejected = [json.loads(x) for x in (tmp_path / "run" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["field"] == "tempo" and rejected[0]["row"] == 2


def test_download_fetches_once_into_the_cache(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "spotify_songs.csv").write_text("track_id,track_name\nx,y\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/spotify_songs.csv"
        path = download_spotify(tmp_path / "cache", url=url)
        assert path.read_text() == "track_id,track_name\nx,y\n"
        (served / "spotify_songs.csv").unlink()          # a second call must not touch the network
        assert download_spotify(tmp_path / "cache", url=url) == path
    finally:
        server.shutdown()
