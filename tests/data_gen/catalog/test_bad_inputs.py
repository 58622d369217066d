"""Bad catalog and playlists files through the ingest command, with --on_error fail and skip: exit code, the message
naming file, row and field, and counts that account for every row, playlist and playlist entry."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.catalog.ingest import main
from data_gen.catalog.split import main as split_main

MODES = ("fail", "skip")
HEADER11 = "track_id,title,artist,album,tags,tempo,key,mode,release_date,genre,audio_features"


@dataclass
class Result:
    code: int
    out: str
    err: str
    run_dir: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.run_dir / "ingest_manifest.json").read_text())

    @property
    def counts(self) -> dict:
        return self.manifest["counts"]

    def lines(self, name: str) -> list[dict]:
        return [json.loads(x) for x in (self.run_dir / name).read_text().splitlines()]

    def track_ids(self) -> list[str]:
        return pq.read_table(self.run_dir / "catalog.parquet").column("track_id").to_pylist()


@pytest.fixture()
def ingest(tmp_path, capsys):
    """ingest(catalog, on_error, playlists=None, run="run") -> Result, through main() as the command runs it."""

    def call(catalog: Path, on_error: str, playlists: Path | None = None, run: str = "run") -> Result:
        argv = ["--source", "catalog", "--input", str(catalog), "--run_dir", str(tmp_path / run),
                "--on_error", on_error]
        if playlists is not None:
            argv += ["--playlists", str(playlists)]
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return Result(code, out, err, tmp_path / run)

    return call


def _file(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _playlists(tmp_path: Path, *lines, name: str = "pl.jsonl") -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return _file(tmp_path, name, text)


def _command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_gen.catalog.ingest", *args], capture_output=True, text=True)


GOOD_CSV = "track_id,title\nt1,A\nt2,B\nt3,C\n"


# ---- catalog files: encodings and headers -------------------------------------------------------------------------

@pytest.mark.parametrize("on_error", MODES)
def test_utf8_bom_is_stripped_and_reported(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "excel.csv", "\ufeff" + GOOD_CSV)
    res = ingest(cat, on_error)
    assert res.code == 0, res.err
    assert (res.counts["read"], res.counts["kept"], res.counts["rejected"]) == (3, 3, 0)
    assert res.track_ids() == ["t1", "t2", "t3"]
    assert "byte-order mark (BOM) stripped" in res.err and "byte-order mark (BOM) stripped" in res.out
    assert any("BOM" in w for w in res.counts["warnings"])


def test_utf8_bom_in_a_jsonl_catalog(tmp_path, ingest):
    cat = _file(tmp_path, "cat.jsonl", "\ufeff" + json.dumps({"track_id": "t1"}) + "\n")
    res = ingest(cat, "fail")
    assert res.code == 0 and res.track_ids() == ["t1"] and "BOM" in res.out


@pytest.mark.parametrize("on_error", MODES)
def test_utf16_with_bom_is_decoded(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "u16.csv", "track_id,title\nt1,Café\nt2,B\n".encode("utf-16"))
    res = ingest(cat, on_error)
    assert res.code == 0, res.err
    assert res.track_ids() == ["t1", "t2"] and "decoded as UTF-16" in res.out
    assert pq.read_table(res.run_dir / "catalog.parquet").column("title").to_pylist()[0] == "Café"


def test_utf16_with_a_bad_row(tmp_path):
    cat = _file(tmp_path, "u16.csv", "track_id,title,tempo\nt1,A,100\nt2,B,fast\n".encode("utf-16"))
    skip = _command("--input", str(cat), "--run_dir", str(tmp_path / "skip"), "--on_error", "skip")
    assert skip.returncode == 0 and "Traceback" not in skip.stderr, skip.stderr
    rejected = [json.loads(x) for x in (tmp_path / "skip" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"], r["record"]["track_id"]) for r in rejected] == [(2, "tempo", "t2")]
    fail = _command("--input", str(cat), "--run_dir", str(tmp_path / "fail"), "--on_error", "fail")
    assert fail.returncode == 2 and "Traceback" not in fail.stderr
    assert f"{cat}: row 2: field 'tempo': not a number" in fail.stderr


@pytest.mark.parametrize("on_error", MODES)
def test_utf16_without_bom_is_refused(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "u16le.csv", GOOD_CSV.encode("utf-16-le"))
    res = ingest(cat, on_error)
    assert res.code == 2
    assert f"{cat}: NUL bytes in a text file: looks like UTF-16 without a byte-order mark" in res.err
    assert not (res.run_dir / "catalog.parquet").exists()


@pytest.mark.parametrize("on_error", MODES)
def test_latin1_header_with_a_bad_row(tmp_path, on_error):
    # a latin-1 export: the header's "í" is not UTF-8; one data row is bad as well
    cat = _file(tmp_path, "latin1.csv", "track_id,títle,tempo\nt1,A,100\nt2,B,fast\n".encode("latin-1"))
    proc = _command("--input", str(cat), "--run_dir", str(tmp_path / "run"), "--on_error", on_error)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{cat}: header: field 't\\xedtle': invalid UTF-8 bytes" in proc.stderr
    assert not (tmp_path / "run" / "catalog.parquet").exists()


@pytest.mark.parametrize("on_error", MODES)
def test_broken_byte_in_a_known_header_is_an_error_not_a_dropped_column(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "cat.csv", b"track_id,titl\xe9\nt1,A\n")
    res = ingest(cat, on_error)
    assert res.code == 2 and "header: field 'titl\\xe9': invalid UTF-8 bytes" in res.err


@pytest.mark.parametrize("on_error", MODES)
def test_broken_field_name_in_jsonl_is_a_row_error(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "cat.jsonl", b'{"track_id": "t1", "t\xedtle": "x"}\n{"track_id": "t2"}\n')
    res = ingest(cat, on_error)
    if on_error == "fail":
        assert res.code == 2 and f"{cat}: row 1: field 't\\xedtle': field name has invalid UTF-8 bytes" in res.err
        return
    assert res.code == 0 and res.track_ids() == ["t2"]
    assert [(r["row"], r["field"]) for r in res.lines("rejected.jsonl")] == [(1, "t\\xedtle")]


@pytest.mark.parametrize("on_error", MODES)
def test_near_miss_header_is_named_in_a_warning_and_the_summary(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "cat.csv", "track_id,Title,popularity\nt1,A,5\n")
    res = ingest(cat, on_error)
    assert res.code == 0
    warning = f"{cat}: column 'Title' is not a catalog field and was ignored (did you mean 'title'? rename the column)"
    assert f"warning: {warning}" in res.err  # when it happens
    assert f"warning: {warning}" in res.out  # and in the summary at exit
    assert "column 'popularity' is not a catalog field and was ignored\n" in res.out
    assert res.counts["ignored_columns"] == ["Title", "popularity"] and warning in res.counts["warnings"]


def test_near_miss_in_jsonl_keys(tmp_path, ingest):
    cat = _file(tmp_path, "cat.jsonl", json.dumps({"track_id": "t1", "Tags": ["rock"]}) + "\n")
    res = ingest(cat, "fail")
    assert res.code == 0 and "column 'Tags' is not a catalog field and was ignored (did you mean 'tags'?" in res.out


@pytest.mark.parametrize("on_error", MODES)
def test_missing_track_id_column_is_named(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "cat.csv", "Track ID,title\nt1,A\n")
    res = ingest(cat, on_error)
    assert res.code == 2
    assert f"{cat}: no 'track_id' column ('Track ID' looks like it: rename it to track_id)" in res.err


# ---- catalog files: rows ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("on_error", MODES)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_audio_feature_length_is_the_majority_not_the_first_row(tmp_path, ingest, on_error, fmt):
    rows = [{"track_id": "t1", "audio_features": [1.0, 2.0, 3.0]}]  # the odd one comes first
    rows += [{"track_id": f"t{i}", "audio_features": [float(i), 1.0]} for i in range(2, 6)]
    if fmt == "parquet":
        cat = tmp_path / "cat.parquet"
        pq.write_table(pa.Table.from_pylist(rows), cat)
    else:
        cat = _file(tmp_path, "cat.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    res = ingest(cat, on_error)
    reason = "length 3 differs from the catalog's 2 (the length of 4 of 5 rows)"
    if on_error == "fail":
        assert res.code == 2 and f"{cat}: row 1: field 'audio_features': {reason}" in res.err
        return
    assert res.code == 0
    assert (res.counts["kept"], res.counts["rejected"], res.counts["audio_feature_dim"]) == (4, 1, 2)
    assert res.counts["audio_feature_lengths"] == {"2": 4, "3": 1}
    assert [(r["row"], r["field"], r["reason"]) for r in res.lines("rejected.jsonl")] == [
        (1, "audio_features", reason)]
    assert res.track_ids() == ["t2", "t3", "t4", "t5"]


def test_audio_feature_length_tie_is_reported(tmp_path, ingest):
    cat = _file(tmp_path, "cat.csv", "track_id,audio_features\nt1,1;2\nt2,1;2;3\n")
    res = ingest(cat, "skip")
    assert res.code == 0 and res.track_ids() == ["t1"]
    assert "audio_features lengths 2 and 3 are equally common (1 rows each); rows of length 2 are kept" in res.out


@pytest.mark.parametrize("on_error", MODES)
def test_csv_row_with_fewer_cells_than_the_header(tmp_path, ingest, on_error):
    good = "t1,Song,Artist,Album,rock,120,0,1,1999,rock,0.1;0.2"
    cat = _file(tmp_path, "cat.csv", f"{HEADER11}\n{good}\nt2,Short\n")
    res = ingest(cat, on_error)
    reason = "fewer cells than header columns (2 cells, 11 columns)"
    if on_error == "fail":
        assert res.code == 2 and f"{cat}: row 2: field '<row>': {reason}" in res.err
        return
    assert res.code == 0 and res.track_ids() == ["t1"]
    (rej,) = res.lines("rejected.jsonl")
    assert (rej["row"], rej["field"], rej["reason"], rej["value"]) == (2, "<row>", reason, ["t2", "Short"])


@pytest.mark.parametrize("on_error", MODES)
def test_comma_separated_tags(tmp_path, ingest, on_error):
    cat = _file(tmp_path, "cat.csv", 'track_id,tags\nt1,"rock, indie, pop"\nt2,jazz;blues\n')
    res = ingest(cat, on_error)
    assert res.code == 0
    tags = pq.read_table(res.run_dir / "catalog.parquet").column("tags").to_pylist()
    assert tags == [["rock", "indie", "pop"], ["jazz", "blues"]]


# ---- playlists files ----------------------------------------------------------------------------------------------

def _catalog(tmp_path: Path, bad_t3: bool = False) -> Path:
    return _file(tmp_path, "cat.csv", "track_id,tempo\nt1,100\nt2,110\n" + ("t3,fast\n" if bad_t3 else "t3,90\n"))


def test_unknown_tracks_are_dropped_counted_and_printed(tmp_path, ingest):
    pls = _playlists(tmp_path, {"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "x9", "t2", "t1"]})
    for on_error in MODES:  # a playlist that keeps catalog tracks is kept in both modes
        res = ingest(_catalog(tmp_path), on_error, pls, run=on_error)
        assert res.code == 0, res.err
        c = res.counts
        assert (c["playlists_read"], c["playlists"], c["playlists_rejected"]) == (1, 1, 0)
        assert (c["playlist_entries_read"], c["playlist_entries"]) == (4, 2)
        assert (c["playlist_entries_dropped_not_in_catalog"], c["playlist_entries_dropped_duplicates"]) == (1, 1)
        assert c["playlist_entries_dropped_rejected_tracks"] == 0
        assert "playlist_entries_dropped_for_rejected_tracks" not in c  # nothing was rejected
        message = (f"{pls}: 1 playlist entries name tracks that are not in the catalog: dropped "
                   f"(first: row 1, track 'x9')")
        assert f"warning: {message}" in res.err and f"warning: {message}" in res.out
        assert res.lines("playlists.jsonl") == [{"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "t2"]}]


@pytest.mark.parametrize("on_error", MODES)
def test_playlist_of_unknown_tracks_and_empty_playlist_are_row_errors(tmp_path, ingest, on_error):
    pls = _playlists(tmp_path,
                     {"playlist_id": "p1", "name": "Mix", "tracks": ["t1"]},
                     {"playlist_id": "p2", "name": "Ghosts", "tracks": ["x1", "x2"]},
                     {"playlist_id": "p3", "name": "Empty", "tracks": []})
    res = ingest(_catalog(tmp_path), on_error, pls)
    if on_error == "fail":
        assert res.code == 2 and f"{pls}: row 2: field 'tracks': none of its 2 tracks is in the catalog" in res.err
        assert "--on_error skip" in res.err and not (res.run_dir / "catalog.parquet").exists()
        return
    assert res.code == 0
    c = res.counts
    assert (c["playlists_read"], c["playlists"], c["playlists_rejected"]) == (3, 1, 2)
    assert c["playlist_entries_dropped_not_in_catalog"] == 2
    assert [(r["row"], r["field"], r["reason"]) for r in res.lines("rejected_playlists.jsonl")] == [
        (2, "tracks", "none of its 2 tracks is in the catalog"), (3, "tracks", "empty playlist (no tracks)")]
    assert f"rejected: {pls}: row 3: field 'tracks': empty playlist" in res.err
    assert "read 3 playlists: kept 1, rejected 2" in res.out


def test_entries_of_rejected_tracks_are_counted_as_such(tmp_path, ingest):
    pls = _playlists(tmp_path, {"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "t3", "x9"]})
    res = ingest(_catalog(tmp_path, bad_t3=True), "skip", pls)
    c = res.counts
    assert (c["rejected"], c["playlist_entries_dropped_rejected_tracks"],
            c["playlist_entries_dropped_not_in_catalog"], c["playlist_entries"]) == (1, 1, 1, 1)
    assert "1 playlist entries name tracks whose catalog rows were rejected: dropped" in res.out


@pytest.mark.parametrize("on_error", MODES)
@pytest.mark.parametrize("name", [None, "", "missing"])
def test_playlist_without_a_name(tmp_path, ingest, on_error, name):
    playlist = {"playlist_id": "p2", "tracks": ["t2"]}
    if name != "missing":
        playlist["name"] = name
    pls = _playlists(tmp_path, {"playlist_id": "p1", "name": "Mix", "tracks": ["t1"]}, playlist)
    res = ingest(_catalog(tmp_path), on_error, pls)
    message = f"{pls}: row 2: field 'name': missing or empty (playlist names are the requests of eval.t2mr)"
    if on_error == "fail":
        assert res.code == 2 and message in res.err
        return
    assert res.code == 0 and f"rejected: {message}" in res.err
    assert (res.counts["playlists"], res.counts["playlists_rejected"]) == (1, 1)
    assert [p["playlist_id"] for p in res.lines("playlists.jsonl")] == ["p1"]


@pytest.mark.parametrize("on_error", MODES)
def test_skip_is_honoured_for_playlists(tmp_path, ingest, on_error):
    pls = _playlists(tmp_path,
                     {"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "t2"]},
                     {"playlist_id": "p1", "name": "Again", "tracks": ["t3"]},      # duplicate id
                     '{"playlist_id": "p3", "name": "Broken", "tracks": [',         # bad JSON line
                     {"playlist_id": "p4", "name": "Mix 2", "tracks": "t1"},        # tracks not a list
                     {"playlist_id": "p5", "name": "Last", "tracks": ["t3"]})
    res = ingest(_catalog(tmp_path), on_error, pls)
    if on_error == "fail":
        assert res.code == 2
        assert f"{pls}: row 2: field 'playlist_id': duplicate playlist_id (first in row 1)" in res.err
        assert "rejected_playlists.jsonl" in res.err  # the hint names where skip puts them
        return
    assert res.code == 0, res.err
    c = res.counts
    assert (c["playlists_read"], c["playlists"], c["playlists_rejected"]) == (5, 2, 3)
    assert c["playlists_read"] == c["playlists"] + c["playlists_rejected"]
    rejected = res.lines("rejected_playlists.jsonl")
    assert [(r["row"], r["field"]) for r in rejected] == [(2, "playlist_id"), (3, "<line>"), (4, "tracks")]
    assert rejected[0]["record"]["name"] == "Again"
    assert [p["playlist_id"] for p in res.lines("playlists.jsonl")] == ["p1", "p5"]
    assert res.manifest["outputs"]["rejected_playlists"]["file"] == "rejected_playlists.jsonl"


def test_non_utf8_playlists_file(tmp_path):
    cat = _catalog(tmp_path)
    pls = _file(tmp_path, "pl.jsonl", b'{"playlist_id": "p1", "name": "Caf\xe9", "tracks": ["t1"]}\n'
                                      b'{"playlist_id": "p2", "name": "Fine", "tracks": ["t2"]}\n')
    args = ["--input", str(cat), "--playlists", str(pls)]
    fail = _command(*args, "--run_dir", str(tmp_path / "fail"))
    assert fail.returncode == 2 and "Traceback" not in fail.stderr, fail.stderr
    assert f"{pls}: row 1: field 'name': invalid UTF-8 bytes (broken encoding) (value: 'Caf\\udce9')" in fail.stderr
    skip = _command(*args, "--run_dir", str(tmp_path / "skip"), "--on_error", "skip")
    assert skip.returncode == 0 and "Traceback" not in skip.stderr, skip.stderr
    (rej,) = [json.loads(x) for x in (tmp_path / "skip" / "rejected_playlists.jsonl").read_text().splitlines()]
    assert (rej["row"], rej["field"], rej["value"]) == (1, "name", "Caf\\xe9")


@pytest.mark.parametrize("on_error", MODES)
def test_utf16_and_bom_playlists_files(tmp_path, ingest, on_error):
    line = json.dumps({"playlist_id": "p1", "name": "Mix", "tracks": ["t1"]}) + "\n"
    for i, data in enumerate((line.encode("utf-16"), ("\ufeff" + line).encode())):
        pls = _file(tmp_path, f"pl{i}.jsonl", data)
        res = ingest(_catalog(tmp_path), on_error, pls, run=f"run{i}")
        assert res.code == 0 and res.counts["playlists"] == 1, res.err
        assert ("decoded as UTF-16" if i == 0 else "BOM) stripped") in res.out


# ---- run directories ----------------------------------------------------------------------------------------------

def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.parametrize("on_error", MODES)
def test_failed_rerun_leaves_the_run_directory_as_it_was(tmp_path, ingest, on_error):
    pls = _playlists(tmp_path, {"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "t2"]})
    first = ingest(_catalog(tmp_path, bad_t3=True), "skip", pls)
    assert first.code == 0 and first.counts["rejected"] == 1
    before = _snapshot(first.run_dir)
    assert set(before) == {"catalog.parquet", "rejected.jsonl", "playlists.jsonl", "rejected_playlists.jsonl",
                           "ingest_manifest.json"}
    # a bad row (fail mode) or a catalog with no valid row (skip mode): the stage fails
    bad = _file(tmp_path, "bad.csv", "track_id,tempo\nt9,fast\n")
    again = ingest(bad, on_error, pls)
    assert again.code == 2 and "left as it was" in again.err
    assert _snapshot(first.run_dir) == before
    # a good catalog whose playlists file fails: the new catalog must not replace the old one
    other = _file(tmp_path, "other.csv", "track_id\nt1\nt7\n")
    broken = _playlists(tmp_path, {"playlist_id": "p1", "tracks": ["t1"]}, name="broken.jsonl")
    if on_error == "skip":
        broken = _playlists(tmp_path, {"playlist_id": "p1", "name": "X", "tracks": ["zz"]}, name="broken.jsonl")
    assert ingest(other, on_error, broken).code == 2
    assert _snapshot(first.run_dir) == before
    assert not any(p.name.startswith(".") for p in first.run_dir.iterdir())  # no staging left behind


def test_successful_rerun_removes_outputs_it_does_not_produce(tmp_path, ingest):
    pls = _playlists(tmp_path, {"playlist_id": "p1", "name": "Mix", "tracks": ["t1", "t2"]})
    assert ingest(_catalog(tmp_path), "fail", pls).code == 0
    res = ingest(_file(tmp_path, "other.csv", "track_id\nt1\nt7\n"), "fail")
    assert res.code == 0
    assert not (res.run_dir / "playlists.jsonl").exists() and not (res.run_dir / "rejected_playlists.jsonl").exists()
    assert set(res.manifest["outputs"]) == {"catalog", "rejected"}
    assert res.counts["playlists"] == 0


def test_manifest_records_output_checksums(tmp_path, ingest):
    from common.manifest import file_sha256

    res = ingest(_catalog(tmp_path), "fail", _playlists(tmp_path, {"playlist_id": "p1", "name": "M", "tracks": ["t1"]}))
    for name, rec in res.manifest["outputs"].items():
        assert file_sha256(res.run_dir / rec["file"]) == rec["sha256"], name


def test_split_refuses_playlists_the_ingest_manifest_does_not_describe(tmp_path, ingest):
    pls = _playlists(tmp_path, *({"playlist_id": f"p{i}", "name": "M", "tracks": ["t1"]} for i in range(5)))
    res = ingest(_catalog(tmp_path), "fail", pls)
    with open(res.run_dir / "playlists.jsonl", "a") as fh:  # e.g. left from another run
        fh.write(json.dumps({"playlist_id": "late", "name": "M", "tracks": ["t2"]}) + "\n")
    with pytest.raises(SystemExit) as exit_:
        split_main(["--run_dir", str(res.run_dir)])
    assert exit_.value.code == 2
    assert not (res.run_dir / "splits").exists()
