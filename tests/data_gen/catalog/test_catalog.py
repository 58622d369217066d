import json

import pyarrow.parquet as pq
import pytest

from data_gen.catalog.ingest import IngestConfig
from data_gen.catalog.ingest import run as ingest_run
from data_gen.catalog.reader import (
    CatalogError,
    RowError,
    ingest_records,
    iter_raw_records,
    normalize_record,
    parse_key,
    parse_release_date,
    parse_tags,
    parse_tempo,
    parse_vector,
)

HEADER = "track_id,title,artist,tempo,key,mode,release_date,tags,audio_features\n"


def _ingest(tmp_path, path, on_error="skip"):
    return ingest_records(iter_raw_records(path), str(path), tmp_path / "out" / "catalog.parquet",
                          tmp_path / "out" / "rejected.jsonl", on_error=on_error)


def _rejected(tmp_path):
    return [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]


# ---- field parsers ------------------------------------------------------------------------------------------------

def test_field_parsers_accept_the_documented_forms():
    assert parse_release_date("1999-07-14") == "1999-07-14"
    assert parse_release_date("1999") == "1999" and parse_release_date("1999-07") == "1999-07"
    assert parse_release_date(" ") is None
    assert parse_tempo("120.5") == 120.5 and parse_tempo(25) == 25.0 and parse_tempo("") is None
    assert parse_key("Db minor") == (1, 0) and parse_key("A") == (9, None) and parse_key(11) == (11, None)
    assert parse_key("F#-major") == (6, 1) and parse_key("7") == (7, None)
    assert parse_tags("rock; indie ;") == ["rock", "indie"] and parse_tags('["a", "b"]') == ["a", "b"]
    assert parse_vector("0.5;1;-2") == [0.5, 1.0, -2.0] and parse_vector([1, 2]) == [1.0, 2.0]


@pytest.mark.parametrize("parser,value,reason", [
    (parse_release_date, "14/07/1999", "unparseable date"),
    (parse_release_date, "1999-02-30", "unparseable date"),
    (parse_release_date, "1999-13", "unparseable date"),
    (parse_release_date, "0999", "year outside"),
    (parse_tempo, "NaN", "NaN or infinite tempo"),
    (parse_tempo, "-3", "tempo out of range"),
    (parse_tempo, "0", "tempo out of range"),
    (parse_tempo, "5000", "tempo out of range"),
    (parse_tempo, "fast", "not a number"),
    (parse_tempo, [120], "expected a number"),
    (parse_key, 12, "pitch class must be 0-11"),
    (parse_key, "H minor", "unknown key name"),
    (parse_vector, "1;x", "expected numbers"),
    (parse_vector, [1.0, float("nan")], "NaN or infinity"),
    (parse_tags, 5, "expected a list of strings"),
])
def test_field_parsers_reject_bad_values(parser, value, reason):
    with pytest.raises(ValueError, match=reason):
        parser(value)


def test_normalize_record_names_file_row_and_field():
    with pytest.raises(RowError) as err:
        normalize_record({"track_id": "t1", "release_date": "someday"}, "cat.csv", 7)
    assert (err.value.file, err.value.row, err.value.field) == ("cat.csv", 7, "release_date")
    assert str(err.value).startswith("cat.csv: row 7: field 'release_date': unparseable date")
    with pytest.raises(RowError, match="field 'title': expected a string, got int"):
        normalize_record({"track_id": "t1", "title": 42}, "cat.jsonl", 1)
    with pytest.raises(RowError, match="mode contradicts"):
        normalize_record({"track_id": "t1", "key": "A minor", "mode": "major"}, "f", 1)
    rec = normalize_record({"track_id": 17, "key": "A minor"}, "f", 1)
    assert rec["track_id"] == "17" and (rec["key"], rec["mode"]) == (9, 0)


# ---- whole-file ingestion: every bad-input case of the foundation issue ----------------------------------------

def test_csv_bad_rows_skip_policy_reconciles_counts(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_bytes((
        HEADER
        + "t1,Song A,Artist,120,0,1,1999-07-14,rock;indie,0.1;0.2\n"     # row 1 ok
        + ",No Id,Artist,120,0,1,1999,,\n"                                 # row 2 missing track_id
        + "t2,Song B,Artist,NaN,0,1,1999,,\n"                              # row 3 NaN tempo
        + "t3,Song C,Artist,1200,0,1,1999,,\n"                             # row 4 tempo out of range
        + "t4,Song D,Artist,100,0,1,July 1999,,\n"                         # row 5 unparseable date
        + "t1,Song A,Artist,120,0,1,1999-07-14,rock;indie,0.1;0.2\n"     # row 6 identical duplicate -> merged
        + "t1,Song A (remix),Artist,120,0,1,1999-07-14,rock,0.1;0.2\n"   # row 7 conflicting duplicate
        + "t5,Song E,Artist,90,x,1,2001,,\n"                               # row 8 wrong type for key
        + "t6,Song F,Artist,90,,,2001,,0.1;0.2;0.3\n"                      # row 9 feature length mismatch
    ).encode() + b"t7,Bad \xff\xfe Bytes,Artist,90,1,1,2001,,\n"          # row 10 broken encoding
             + b"t8,Fine,,,,,,,\n")                                         # row 11 ok (only track_id + title)
    report = _ingest(tmp_path, path)
    assert (report.read, report.kept, report.duplicates_merged, report.rejected) == (11, 2, 1, 8)
    rejected = _rejected(tmp_path)
    assert [(r["row"], r["field"]) for r in rejected] == [
        (2, "track_id"), (3, "tempo"), (4, "tempo"), (5, "release_date"), (7, "track_id"), (8, "key"),
        (9, "audio_features"), (10, "title")]
    assert all(r["file"] == str(path) for r in rejected)
    assert "conflicts with row 1" in rejected[4]["reason"]
    assert "broken encoding" in rejected[7]["reason"]
    assert rejected[1]["record"]["track_id"] == "t2"  # the raw row is kept, nothing is lost
    table = pq.read_table(tmp_path / "out" / "catalog.parquet")
    assert table.column("track_id").to_pylist() == ["t1", "t8"]
    assert table.column("tags").to_pylist()[0] == ["rock", "indie"]


def test_fail_policy_stops_at_the_first_bad_row(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text(HEADER + "t1,A,B,120,0,1,1999,,\nt2,A,B,120,0,1,99-1-1,,\n")
    with pytest.raises(RowError, match=r"cat.csv: row 2: field 'release_date'"):
        _ingest(tmp_path, path, on_error="fail")
    assert not (tmp_path / "out" / "catalog.parquet").exists()  # no half-written catalog


def test_jsonl_wrong_types_and_invalid_json(tmp_path):
    path = tmp_path / "cat.jsonl"
    path.write_text("\n".join([
        json.dumps({"track_id": "a", "title": "x", "tempo": 101.0, "tags": ["pop"]}),
        json.dumps({"track_id": "b", "title": ["not", "a", "string"]}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"track_id": "c", "audio_features": [1, "two"]}),
    ]) + "\n")
    report = _ingest(tmp_path, path)
    assert (report.read, report.kept, report.rejected) == (5, 1, 4)
    assert [(r["row"], r["field"]) for r in _rejected(tmp_path)] == [
        (2, "title"), (3, "<line>"), (4, "<line>"), (5, "audio_features")]


def test_parquet_catalog_round_trip(tmp_path):
    import pyarrow as pa

    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"track_id": "a", "title": "x", "tempo": 99.5, "key": "C", "mode": "minor", "release_date": "1980"},
        {"track_id": "b", "title": "y", "tempo": None, "key": None, "mode": None, "release_date": None},
    ]), src)
    report = _ingest(tmp_path, src, on_error="fail")
    assert report.kept == 2 and report.ignored_columns == []
    rows = pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()
    assert rows[0]["key"] == 0 and rows[0]["mode"] == 0 and rows[1]["tempo"] is None


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CatalogError, match="empty.csv: file is empty"):
        _ingest(tmp_path, empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(HEADER)
    with pytest.raises(CatalogError, match="no valid records"):
        _ingest(tmp_path, header_only)
    sheet = tmp_path / "x.xlsx"
    sheet.write_text("x")
    with pytest.raises(CatalogError, match="unknown catalog format"):
        _ingest(tmp_path, sheet)
    with pytest.raises(CatalogError, match="file not found"):
        _ingest(tmp_path, tmp_path / "nope.csv")


def test_unknown_columns_are_reported_not_dropped_silently(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("track_id,title,popularity\nt1,A,55\n")
    report = _ingest(tmp_path, path)
    assert report.ignored_columns == ["popularity"]


def test_ingest_command_catalog_source_with_playlists(tmp_path):
    cat = tmp_path / "cat.csv"
    cat.write_text("track_id,title,artist,tempo\nt1,A,X,100\nt2,B,Y,fast\nt3,C,Z,90\n")
    pls = tmp_path / "pl.jsonl"
    pls.write_text(json.dumps({"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "t2", "t3"]}) + "\n")
    counts = ingest_run(IngestConfig(run_dir=str(tmp_path / "run"), source="catalog", input=str(cat),
                                     playlists=str(pls), on_error="skip"))
    assert (counts["read"], counts["kept"], counts["rejected"]) == (3, 2, 1)
    # the rejected track's playlist entry is dropped *and counted*
    assert counts["playlist_entries_dropped_rejected_tracks"] == 1 and counts["playlist_entries"] == 2
    assert counts["playlist_entries_dropped_not_in_catalog"] == 0
    manifest = json.loads((tmp_path / "run" / "ingest_manifest.json").read_text())
    assert manifest["inputs"]["input"]["sha256"] and manifest["versions"]["pyarrow"]
    assert manifest["counts"]["kept"] == 2
