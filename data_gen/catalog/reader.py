"""The catalog format: a parquet, JSONL or CSV file, one record per track -> validated, normalised records.

Only `track_id` is required; a missing field makes its modality absent for that track. Fields: title, artist, album
(BM), artist_roles (AC), tags (ST), audio_features or audio_path (SC), tempo, key, mode (MC), release_date (RI),
song_facts (SF), artist_bio (AB); `genre` is an evaluation label only; TC comes from a playlists file.
Types and accepted values: docs/catalog_format.md. Bad rows raise `RowError` naming file, row and field; whole-file
problems (no track_id column, a header with broken bytes, an unreadable encoding) raise `CatalogError`. Text files
may start with a UTF-8 BOM (stripped) or be UTF-16/32 with a BOM (decoded); both are reported, never silent.
"""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import difflib
import hashlib
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TEXT_FIELDS = ("title", "artist", "album", "artist_roles", "audio_path", "song_facts", "artist_bio", "genre")
CATALOG_FIELDS = (
    "track_id", "title", "artist", "album", "artist_roles", "tags", "audio_features", "audio_path",
    "tempo", "key", "mode", "release_date", "song_facts", "artist_bio", "genre",
)
CATALOG_SCHEMA = pa.schema([
    ("track_id", pa.string()),
    ("title", pa.string()),
    ("artist", pa.string()),
    ("album", pa.string()),
    ("artist_roles", pa.string()),
    ("tags", pa.list_(pa.string())),
    ("audio_features", pa.list_(pa.float32())),
    ("audio_path", pa.string()),
    ("tempo", pa.float64()),
    ("key", pa.int8()),
    ("mode", pa.int8()),
    ("release_date", pa.string()),
    ("song_facts", pa.string()),
    ("artist_bio", pa.string()),
    ("genre", pa.string()),
])
TEMPO_VALID = (0.0, 1000.0)  # exclusive low, inclusive high: physically plausible BPM
YEAR_VALID = (1000, 2100)

_PITCH = {"C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5, "E#": 5,
          "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11, "CB": 11}
_MODE = {"major": 1, "maj": 1, "1": 1, "minor": 0, "min": 0, "m": 0, "0": 0}


class CatalogError(Exception):
    """A whole-file problem (missing file, empty file, unknown format): always fatal."""


class RowError(Exception):
    """A bad value in one row; names the file, the 1-based row number, and the field (and the row's track_id when
    known, so that the playlist entries of a rejected track are counted as such)."""

    def __init__(self, file: str, row: int, field: str, reason: str, value: Any = None, track_id: str | None = None):
        self.file, self.row, self.field, self.reason, self.value = str(file), row, field, reason, value
        self.track_id = track_id
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        super().__init__(f"{file}: row {row}: field '{field}': {reason} (value: {shown})")

    def to_json(self) -> dict:
        return {"file": jsonable(self.file), "row": self.row, "field": jsonable(self.field),
                "reason": jsonable(self.reason), "value": jsonable(self.value)}


def jsonable(value: Any) -> Any:
    """A value that json can write to a UTF-8 file: undecodable bytes are shown as \\xNN escapes."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {jsonable(str(k)): jsonable(v) for k, v in value.items()}
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def has_bad_bytes(text: str) -> bool:
    # Files are decoded with surrogateescape: undecodable bytes survive as lone surrogates U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


# ----------------------------------------------------------------------------------------------------------------
# Field parsers: raw value (from CSV strings, JSON values or Arrow scalars) -> normalised value or None (missing).
# Each raises ValueError with a short reason; normalize_record turns that into a RowError.
# ----------------------------------------------------------------------------------------------------------------

def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def parse_text(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if has_bad_bytes(value):
        raise ValueError("invalid UTF-8 bytes (broken encoding)")
    return value.strip()


def parse_tags(value: Any) -> list[str] | None:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"not a JSON list ({err.msg})") from None
        else:
            value = re.split(r"[;,]", value)  # "rock;indie" and "rock, indie" (spreadsheets) are both lists
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise ValueError("expected a list of strings or a ';'- or ','-separated string")
    tags = [t.strip() for t in value if t.strip()]
    if any(has_bad_bytes(t) for t in tags):
        raise ValueError("invalid UTF-8 bytes (broken encoding)")
    return tags or None


def parse_vector(value: Any) -> list[float] | None:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [float(x) for x in text.split(";")]
        except ValueError:
            raise ValueError("expected numbers separated by ';' or a JSON array") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("expected a non-empty list of numbers")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ValueError(f"expected numbers, found {type(x).__name__}")
        if not math.isfinite(x):
            raise ValueError("contains NaN or infinity")
        out.append(float(x))
    return out


def parse_tempo(value: Any) -> float | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got bool")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("not a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError("NaN or infinite tempo")
    lo, hi = TEMPO_VALID
    if not lo < value <= hi:
        raise ValueError(f"tempo out of range ({lo:g}, {hi:g}] BPM")
    return float(value)


def parse_key(value: Any) -> tuple[int | None, int | None]:
    """Key -> (pitch class 0-11 or None, mode from the name or None). Accepts ints and names like 'Db minor'."""
    if _is_missing(value):
        return None, None
    if isinstance(value, bool):
        raise ValueError("expected a pitch class or key name, got bool")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value <= 11:
            raise ValueError("pitch class must be 0-11")
        return value, None
    if not isinstance(value, str):
        raise ValueError(f"expected a pitch class or key name, got {type(value).__name__}")
    text = value.strip()
    if text.lstrip("-").isdigit():
        return parse_key(int(text))
    parts = text.replace("-", " ").split()
    pitch = _PITCH.get(parts[0].upper().replace("♯", "#").replace("♭", "B"))
    if pitch is None:
        raise ValueError("unknown key name")
    mode = None
    if len(parts) > 1:
        mode = _MODE.get(parts[1].lower())
        if mode is None or len(parts) > 2:
            raise ValueError("unknown key name")
    return pitch, mode


def parse_mode(value: Any) -> int | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError("expected 0/1 or major/minor, got bool")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    mode = _MODE.get(str(value).strip().lower())
    if mode is None:
        raise ValueError("expected 0/1 or major/minor")
    return mode


def parse_release_date(value: Any) -> str | None:
    """'YYYY', 'YYYY-MM' or 'YYYY-MM-DD' (a real calendar date) -> the same string, validated."""
    if _is_missing(value):
        return None
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a date string, got {type(value).__name__}")
    text = value.strip()
    parts = text.split("-")
    try:
        if len(parts) == 1 and len(parts[0]) == 4:
            year = int(parts[0])
            _dt.date(year, 1, 1)
        elif len(parts) == 2 and len(parts[0]) == 4:
            year = int(parts[0])
            _dt.date(year, int(parts[1]), 1)
        elif len(parts) == 3 and len(parts[0]) == 4:
            year = int(parts[0])
            _dt.date(year, int(parts[1]), int(parts[2]))
        else:
            raise ValueError
    except ValueError:
        raise ValueError("unparseable date (expected YYYY, YYYY-MM or YYYY-MM-DD)") from None
    if not YEAR_VALID[0] <= year <= YEAR_VALID[1]:
        raise ValueError(f"year outside {YEAR_VALID[0]}-{YEAR_VALID[1]}")
    return text


def normalize_record(raw: dict, file: str, row: int) -> dict:
    """Raw record (CSV strings, JSON values or Arrow values) -> record with CATALOG_SCHEMA types.

    Raises RowError naming the first bad field. Unknown keys are ignored by the caller's report, not here.
    """
    track_id = raw.get("track_id")
    if isinstance(track_id, int) and not isinstance(track_id, bool):
        track_id = str(track_id)
    if _is_missing(track_id):
        raise RowError(file, row, "track_id", "missing track_id", track_id)
    if not isinstance(track_id, str):
        raise RowError(file, row, "track_id", f"expected a string, got {type(track_id).__name__}", track_id)
    if has_bad_bytes(track_id):
        raise RowError(file, row, "track_id", "invalid UTF-8 bytes (broken encoding)", track_id)
    rec: dict[str, Any] = {"track_id": track_id.strip()}

    def run(name: str, parser):
        try:
            return parser(raw.get(name))
        except ValueError as err:
            raise RowError(file, row, name, str(err), raw.get(name)) from None

    for name in TEXT_FIELDS:
        rec[name] = run(name, parse_text)
    rec["tags"] = run("tags", parse_tags)
    rec["audio_features"] = run("audio_features", parse_vector)
    rec["tempo"] = run("tempo", parse_tempo)
    pitch, key_mode = run("key", parse_key)
    mode = run("mode", parse_mode)
    if key_mode is not None and mode is not None and key_mode != mode:
        raise RowError(file, row, "mode", "mode contradicts the mode in the key name", raw.get("mode"))
    rec["key"], rec["mode"] = pitch, mode if mode is not None else key_mode
    rec["release_date"] = run("release_date", parse_release_date)
    return rec


def record_digest(rec: dict) -> str:
    """Stable hash of a normalised record, used to tell identical duplicates from conflicting ones."""
    return hashlib.sha1(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Readers: a catalog file -> (row number, raw dict) pairs, streaming.
# ----------------------------------------------------------------------------------------------------------------

# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"))


def detect_format(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    for fmt, ends in (("parquet", (".parquet", ".pq")), ("jsonl", (".jsonl", ".json", ".ndjson")),
                      ("csv", (".csv", ".tsv"))):
        if suffixes.endswith(ends):
            return fmt
    raise CatalogError(f"{path}: unknown catalog format (expected .parquet, .jsonl or .csv)")


def sniff_text_encoding(path: str | Path) -> tuple[str, str | None]:
    """A text file -> (codec to open it with, a note for the report or None).

    A UTF-8 BOM (Excel's "CSV UTF-8") is stripped and UTF-16/32 with a BOM is decoded, both with a note. NUL bytes
    without a BOM (UTF-16 saved without one) are refused: read as UTF-8, every row would be garbage."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    for bom, codec, label in _BOMS:
        if head.startswith(bom):
            if label == "UTF-8":
                return codec, f"{path}: UTF-8 byte-order mark (BOM) stripped"
            return codec, f"{path}: {label} file (byte-order mark): decoded as {label}"
    if b"\x00" in head:
        raise CatalogError(f"{path}: NUL bytes in a text file: looks like UTF-16 without a byte-order mark; "
                           f"save it as UTF-8")
    return "utf-8", None


def open_text(path: str | Path, codec: str):
    # UTF-8: undecodable bytes survive as lone surrogates, so the row and field holding them can be named.
    # UTF-16/32 cannot carry them that way: there a broken byte raises UnicodeDecodeError (see decode_error).
    return open(path, encoding=codec, errors="surrogateescape" if codec.startswith("utf-8") else "strict",
                newline="")


def decode_error(path: str | Path, codec: str, row: int, err: UnicodeDecodeError) -> CatalogError:
    return CatalogError(f"{path}: row {row + 1}: not valid {codec.upper()} ({err.reason}); save the file as UTF-8")


def iter_jsonl_objects(path: Path, codec: str) -> Iterator[tuple[int, dict | RowError]]:
    """A JSONL file -> (line number, object), or a RowError for a line that is not a JSON object; blank lines are
    skipped; bytes the codec cannot decode raise CatalogError naming the line."""
    row = 0
    with open_text(path, codec) as fh:
        try:
            for row, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    yield row, RowError(path, row, "<line>", f"invalid JSON ({err.msg})", line.strip())
                    continue
                if not isinstance(obj, dict):
                    yield row, RowError(path, row, "<line>", "expected a JSON object", obj)
                    continue
                yield row, obj
        except UnicodeDecodeError as err:
            raise decode_error(path, codec, row, err) from None


class CatalogReader:
    """A catalog file -> (1-based row number, raw dict or RowError) pairs, streamed; iterable more than once.

    `columns` is the CSV header or the parquet schema (None for JSONL, whose keys vary by row); `notes` are
    whole-file remarks for the report (a stripped BOM, a decoded UTF-16 file)."""

    def __init__(self, path: str | Path, fmt: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise CatalogError(f"{path}: file not found")
        if self.path.stat().st_size == 0:
            raise CatalogError(f"{path}: file is empty")
        self.fmt = fmt or detect_format(self.path)
        self.notes: list[str] = []
        self.columns: list[str] | None = None
        self.codec = "utf-8"
        if self.fmt == "parquet":
            try:
                self.columns = list(pq.ParquetFile(self.path).schema_arrow.names)
            except (pa.ArrowInvalid, OSError) as err:
                raise CatalogError(f"{path}: not a readable parquet file ({err})") from None
        elif self.fmt in ("jsonl", "csv"):
            self.codec, note = sniff_text_encoding(self.path)
            if note:
                self.notes.append(note)
            if self.fmt == "csv":
                self.columns = self._csv_header()
        else:
            raise CatalogError(f"{path}: unknown format {fmt!r}")

    @property
    def _delimiter(self) -> str:
        return "\t" if self.path.suffix.lower() == ".tsv" else ","

    def _csv_header(self) -> list[str]:
        with open_text(self.path, self.codec) as fh:
            try:
                header = next(csv.reader(fh, delimiter=self._delimiter), None)
            except UnicodeDecodeError as err:
                raise decode_error(self.path, self.codec, -1, err) from None
        if not header:
            raise CatalogError(f"{self.path}: file is empty (no header row)")
        for name in header:
            if has_bad_bytes(name):
                raise CatalogError(f"{self.path}: header: field '{jsonable(name)}': invalid UTF-8 bytes (the file "
                                   f"is not UTF-8, e.g. latin-1 or cp1252): save it as UTF-8")
        repeated = sorted(n for n, c in Counter(header).items() if c > 1)
        if repeated:
            raise CatalogError(f"{self.path}: header: column(s) {', '.join(map(repr, repeated))} appear more than once")
        return header

    def __iter__(self) -> Iterator[tuple[int, dict | RowError]]:
        return {"parquet": self._parquet, "jsonl": self._jsonl, "csv": self._csv}[self.fmt]()

    def field_values(self, name: str) -> Iterator[Any]:
        """The raw values of one field, row by row (a parquet file reads only that column)."""
        if self.fmt == "parquet":
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=8192, columns=[name]):
                yield from batch.column(0).to_pylist()
            return
        yield from (raw.get(name) for _, raw in self if isinstance(raw, dict))

    def _parquet(self) -> Iterator[tuple[int, dict | RowError]]:
        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=8192):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec

    def _jsonl(self) -> Iterator[tuple[int, dict | RowError]]:
        yield from iter_jsonl_objects(self.path, self.codec)

    def _csv(self) -> Iterator[tuple[int, dict | RowError]]:
        header = self.columns or []
        row = 0
        with open_text(self.path, self.codec) as fh:
            reader = csv.reader(fh, delimiter=self._delimiter)
            try:
                next(reader)
                for cells in reader:
                    if not cells:  # a blank line
                        continue
                    row += 1
                    if len(cells) != len(header):  # a short row would otherwise read as missing values
                        more = "more" if len(cells) > len(header) else "fewer"
                        tid = cells[header.index("track_id")] if "track_id" in header[:len(cells)] else None
                        yield row, RowError(self.path, row, "<row>", f"{more} cells than header columns "
                                            f"({len(cells)} cells, {len(header)} columns)", cells, track_id=tid)
                        continue
                    yield row, dict(zip(header, cells))
            except UnicodeDecodeError as err:
                raise decode_error(self.path, self.codec, row, err) from None
            except csv.Error as err:
                raise CatalogError(f"{self.path}: row {row + 1}: unreadable CSV ({err})") from None


def iter_raw_records(path: str | Path, fmt: str | None = None) -> CatalogReader:
    """Yield (1-based row number, raw dict) for each record; a row that cannot even be parsed yields a RowError.

    The returned reader can be iterated again (ingest_records reads the file twice) and carries the file's header
    (`columns`) and notes (a stripped BOM...). Whole-file problems raise CatalogError here."""
    return CatalogReader(path, fmt)


def near_miss(column: str, known: Iterable[str]) -> str | None:
    """The catalog field an unknown column most likely meant ('Title' -> 'title', 'Track ID' -> 'track_id')."""
    known = sorted(known)
    key = re.sub(r"[\s\-]+", "_", column.strip().lower())
    if key in known:
        return key
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
    return close[0] if close else None


def column_warnings(file: str, ignored: Iterable[str], known: Iterable[str]) -> list[str]:
    """One warning per ignored column, naming the field a near-miss header probably meant."""
    out = []
    for col in sorted(ignored):
        guess = near_miss(col, known)
        hint = f" (did you mean '{guess}'? rename the column)" if guess else ""
        out.append(f"{file}: column '{jsonable(col)}' is not a catalog field and was ignored{hint}")
    return out


def audio_feature_lengths(records: Iterable[tuple[int, dict | RowError]]) -> Counter:
    """First streaming pass: rows per audio_features length (unparseable values are left to the second pass)."""
    values = (records.field_values("audio_features") if isinstance(records, CatalogReader)
              else (raw.get("audio_features") for _, raw in records if isinstance(raw, dict)))
    lengths: Counter = Counter()
    for value in values:
        try:
            vec = parse_vector(value)
        except ValueError:
            continue
        if vec is not None:
            lengths[len(vec)] += 1
    return lengths


# ----------------------------------------------------------------------------------------------------------------
# Ingestion: raw records -> catalog.parquet + rejected.jsonl + report (read = kept + merged + rejected)
# ----------------------------------------------------------------------------------------------------------------

def write_rejection(report, err: RowError, raw, fh) -> None:
    """Skip mode: count a bad row by its reason in `report` (rejected, rejected_by_reason), write it with its raw
    values to the rejected file `fh`, and say so on stderr."""
    report.rejected += 1
    report.rejected_by_reason[err.reason] = report.rejected_by_reason.get(err.reason, 0) + 1
    record = jsonable(raw) if isinstance(raw, dict) else None
    fh.write(json.dumps({**err.to_json(), "record": record}, ensure_ascii=False, default=str) + "\n")
    print(f"rejected: {err}", file=sys.stderr)


@dataclass
class IngestReport:
    """Counts of one ingestion; `read == kept + duplicates_merged + rejected` always holds."""

    source: str
    read: int = 0
    kept: int = 0
    duplicates_merged: int = 0
    rejected: int = 0
    rejected_by_reason: dict = field(default_factory=dict)
    ignored_columns: list = field(default_factory=list)
    audio_feature_dim: int | None = None
    audio_feature_lengths: dict = field(default_factory=dict)  # length -> rows (first pass)
    warnings: list = field(default_factory=list)
    # track_ids of rejected rows that are not in the catalog (their playlist entries are dropped); not in the JSON
    rejected_track_ids: set = field(default_factory=set, repr=False)

    def check(self) -> None:
        if self.read != self.kept + self.duplicates_merged + self.rejected:
            raise AssertionError(f"counts do not reconcile: {self.to_json()}")

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "rejected_track_ids"}


class CatalogWriter:
    """Streams normalised records into a parquet file in row groups."""

    def __init__(self, path: str | Path, batch_rows: int = 8192):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_suffix(".parquet.tmp")
        self._writer = pq.ParquetWriter(self._tmp, CATALOG_SCHEMA)
        self._buf: list[dict] = []
        self.batch_rows = batch_rows

    def write(self, rec: dict) -> None:
        self._buf.append(rec)
        if len(self._buf) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._writer.write_table(pa.Table.from_pylist(self._buf, schema=CATALOG_SCHEMA))
            self._buf = []

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._tmp.replace(self.path)  # atomic: a crashed ingestion never leaves a half-written catalog

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def _warn(report: IngestReport, message: str) -> None:
    report.warnings.append(message)
    print(f"warning: {message}", file=sys.stderr)


def ingest_records(
    records: Iterable[tuple[int, dict | RowError]],
    file: str,
    out_path: str | Path,
    rejected_path: str | Path,
    on_error: str = "fail",
    known_columns: Iterable[str] = CATALOG_FIELDS,
) -> IngestReport:
    """Validate and deduplicate raw records, write catalog.parquet and rejected.jsonl, return the report.

    on_error="fail" raises the first RowError; "skip" writes the row to rejected.jsonl and goes on.
    Duplicate track_ids with identical normalised data are merged (counted); conflicting ones are errors.
    The audio-feature length is the one most rows share (a first pass counts lengths), so a bad first row cannot
    reject the good ones. Pass a re-iterable (a CatalogReader, a list) to keep memory bounded: a one-shot
    iterator is buffered for the second pass.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    report = IngestReport(source=str(file))
    known = set(known_columns)
    for note in getattr(records, "notes", ()):
        _warn(report, note)
    columns = getattr(records, "columns", None)
    if columns is not None:
        if "track_id" not in columns:
            guess = next((c for c in columns if near_miss(c, known) == "track_id"), None)
            hint = f" ('{guess}' looks like it: rename it to track_id)" if guess else ""
            raise CatalogError(f"{file}: no 'track_id' column{hint}; columns: {', '.join(columns)}")
        for message in column_warnings(file, set(columns) - known, known):
            _warn(report, message)
    if iter(records) is records:
        records = list(records)
    lengths = audio_feature_lengths(records) if columns is None or "audio_features" in columns else Counter()
    feature_dim = None
    if lengths:
        (feature_dim, n_dim), *others = lengths.most_common()
        if others and others[0][1] == n_dim:
            _warn(report, f"{file}: audio_features lengths {feature_dim} and {others[0][0]} are equally common "
                          f"({n_dim:,} rows each); rows of length {feature_dim} are kept")
    n_features = sum(lengths.values())
    ignored: set[str] = set()
    seen: dict[str, tuple[int, str]] = {}  # track_id -> (row, digest)
    rejected_ids: set[str] = set()
    writer = CatalogWriter(out_path)
    Path(rejected_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(rejected_path, "w", encoding="utf-8") as rej:
            for row, raw in records:
                report.read += 1
                try:
                    if isinstance(raw, RowError):
                        raise raw
                    for k in raw:
                        if k not in known:
                            if isinstance(k, str) and has_bad_bytes(k):
                                raise RowError(file, row, jsonable(k), "field name has invalid UTF-8 bytes "
                                               "(broken encoding)", raw[k])
                            ignored.add(k)
                    rec = normalize_record(raw, file, row)
                    if rec["audio_features"] is not None and len(rec["audio_features"]) != feature_dim:
                        raise RowError(file, row, "audio_features",
                                       f"length {len(rec['audio_features'])} differs from the catalog's "
                                       f"{feature_dim} (the length of {lengths[feature_dim]:,} of {n_features:,} "
                                       f"rows)", len(rec["audio_features"]))
                    digest = record_digest(rec)
                    if rec["track_id"] in seen:
                        first_row, first_digest = seen[rec["track_id"]]
                        if first_digest == digest:
                            report.duplicates_merged += 1
                            continue
                        raise RowError(file, row, "track_id",
                                       f"duplicate track_id with data that conflicts with row {first_row}",
                                       rec["track_id"])
                    seen[rec["track_id"]] = (row, digest)
                    writer.write(rec)
                    report.kept += 1
                except RowError as err:
                    if on_error == "fail":
                        raise
                    tid = raw.get("track_id") if isinstance(raw, dict) else raw.track_id
                    if isinstance(tid, (str, int)) and not isinstance(tid, bool) and str(tid).strip():
                        rejected_ids.add(str(tid).strip())
                    write_rejection(report, err, raw, rej)
    except BaseException:
        writer.abort()
        raise
    if report.kept == 0:
        writer.abort()
        raise CatalogError(f"{file}: no valid records ({report.read} read, {report.rejected} rejected)")
    writer.close()
    if columns is None:  # JSONL and in-memory sources: the keys were only known row by row
        for message in column_warnings(file, ignored, known):
            _warn(report, message)
    report.ignored_columns = sorted(ignored | (set(columns or ()) - known))
    report.audio_feature_dim = feature_dim
    report.audio_feature_lengths = {str(k): v for k, v in sorted(lengths.items())}
    report.rejected_track_ids = rejected_ids - seen.keys()
    report.check()
    return report


def read_catalog(path: str | Path, columns: list[str] | None = None,
                 batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """Stream an ingested catalog.parquet in record batches (only the requested columns)."""
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)


def catalog_track_ids(path: str | Path) -> list[str]:
    """The track_id column of an ingested catalog, in file order (this order is the row order of embeddings)."""
    return pq.read_table(path, columns=["track_id"]).column("track_id").to_pylist()


def rejected_counter(path: str | Path) -> Counter:
    """Count rejected rows by field (for reports and tests)."""
    with open(path, encoding="utf-8") as fh:
        return Counter(json.loads(line)["field"] for line in fh if line.strip())
