"""Reading input files: Parquet, JSON lines and CSV, streamed in batches, as-is.

Inputs are local paths or ``s3://`` URIs (:mod:`flywheel.storage`); both are read through
the same pyarrow filesystem calls, so a file reads the same wherever it lies.

Readers decide no types: CSV is read as strings, Parquet keeps its own types and a JSON
field keeps its JSON type only when all its values share one; the column checks
(:mod:`flywheel.ingest.checks`) are the one place a value is judged. Lines that
cannot be parsed at all come back as ``rejects`` and are quarantined like bad rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import storage
from flywheel.ingest.errors import InputFileError
from flywheel.ingest.validate import quarantine_table

PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
INPUT_SUFFIXES = PARQUET_SUFFIXES + JSON_SUFFIXES + CSV_SUFFIXES


@dataclass(frozen=True)
class RawBatch:
    """Rows read from a file as-is, plus lines that could not even be parsed.

    ``rejects`` holds ``(reason, original text)`` pairs; they are quarantined like bad rows.
    """

    table: pa.Table
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def rejects_table(self, source: str, at: datetime) -> pa.Table:
        """The rejected lines as quarantine records (each line JSON-encoded as a string)."""
        reasons = [reason for reason, _ in self.rejects]
        return quarantine_table(source, reasons, [json.dumps(t) for _, t in self.rejects], at)


def _rebatch(tables: Iterable[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    """Concatenate small tables up to ``batch_size`` rows (schemas may differ by type)."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        if rows >= batch_size:
            yield pa.concat_tables(pending, promote_options="permissive")
            pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending, promote_options="permissive")


def _open(path: storage.Location, s3: storage.S3Options | None) -> pa.NativeFile:
    """A seekable binary file on ``path``'s filesystem (local disk or S3)."""
    fs, where = storage.resolve(path, s3)
    return fs.open_input_file(where)


def _open_text(path: storage.Location, s3: storage.S3Options | None, **kw: Any) -> IO[str]:
    return io.TextIOWrapper(_open(path, s3), **kw)


def _read_parquet(
    path: storage.Location, batch_size: int, s3: storage.S3Options | None
) -> Iterator[RawBatch]:
    with _open(path, s3) as fh:
        reader = pq.ParquetFile(fh)
        for batch in reader.iter_batches(batch_size=batch_size):
            yield RawBatch(pa.Table.from_batches([batch]))


def _read_csv(
    path: storage.Location, batch_size: int, s3: storage.S3Options | None
) -> Iterator[RawBatch]:
    """CSV read as strings (types are decided by the checks, not guessed by the reader)."""
    import pyarrow.csv as pacsv

    with _open_text(path, s3, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        return
    rejects: list[tuple[str, str]] = []

    def on_invalid(row: Any) -> str:
        reason = f"malformed CSV row (expected {row.expected_columns} fields): line {row.number}"
        rejects.append((reason, row.text))
        return "skip"

    source = _open(path, s3)
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False
        ),
    )
    with source:
        tables = (pa.Table.from_batches([b]) for b in reader)
        for table in _rebatch(tables, batch_size):
            yield RawBatch(table, rejects[:])
            rejects.clear()
    if rejects:
        yield RawBatch(pa.table({name: pa.array([], pa.string()) for name in header}), rejects)


def _json_records(
    path: storage.Location, s3: storage.S3Options | None
) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """``(record, line)`` per non-blank line (``record`` None when it is not a JSON object)."""
    with _open_text(path, s3, encoding="utf-8") as fh:
        head = fh.read(1)
        while head.isspace():
            head = fh.read(1)
        fh.seek(0)
        if head == "[":  # one JSON array of objects rather than JSON lines
            for item in json.load(fh):
                yield (item if isinstance(item, dict) and item else None), json.dumps(item)
            return
        for line in fh:
            if line.strip():
                yield json_object(line), line.rstrip("\n")


def json_object(line: str) -> dict[str, Any] | None:
    """``line`` parsed, when it is one non-empty JSON object; otherwise None."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and value else None


def _json_column(values: list[Any]) -> pa.Array:
    """One JSON field as a column: typed when every value has one JSON type, else text.

    All integers (no booleans), all numbers or all booleans keep their type, so the checks
    judge them as a typed Parquet column (an id may be an integer, not a boolean); any other
    mix is read as strings, non-string values JSON-encoded (``5`` -> ``"5"``).
    """
    kinds = {type(v) for v in values if v is not None}
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values if v is not None):
        return pa.array(values, pa.int64())
    if kinds and kinds <= {int, float} and float in kinds:
        return pa.array(values, pa.float64())
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    return pa.array(
        [v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string()
    )


def _records_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records as a table, one column per field seen (see :func:`_json_column`)."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return pa.table({name: _json_column([r.get(name) for r in records]) for name in names})


def _read_json(
    path: storage.Location, batch_size: int, s3: storage.S3Options | None
) -> Iterator[RawBatch]:
    records: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    for record, line in _json_records(path, s3):
        if record is None:
            rejects.append(("not a non-empty JSON object", line))
        else:
            records.append(record)
        if len(records) >= batch_size:
            yield RawBatch(_records_table(records), rejects)
            records, rejects = [], []
    if records or rejects:
        yield RawBatch(_records_table(records), rejects)


def read_raw(
    path: storage.Location, batch_size: int = 250_000, s3: storage.S3Options | None = None
) -> Iterator[RawBatch]:
    """Stream a Parquet, JSON-lines or CSV file in batches of about ``batch_size`` rows.

    ``path`` is a local path or an ``s3://`` URI (``s3``: how to reach it; default from
    the ``AWS_*`` environment).

    Raises:
        InputFileError: the file cannot be read or parsed as its type (naming the path).
    """
    suffix = storage.suffix(path)
    if suffix in PARQUET_SUFFIXES:
        reader = _read_parquet
    elif suffix in JSON_SUFFIXES:
        reader = _read_json
    elif suffix in CSV_SUFFIXES:
        reader = _read_csv
    else:
        raise InputFileError(f"{path}: unsupported file type {suffix!r}; expected {INPUT_SUFFIXES}")
    try:
        yield from reader(path, batch_size, s3)
    except OSError as exc:
        if storage.is_uri(path):
            raise InputFileError(str(storage.explain(exc, path, s3))) from exc
        raise InputFileError(f"{path}: cannot read as {suffix[1:]}: {_first_line(exc)}") from exc
    except (UnicodeDecodeError, pa.ArrowException, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read as {suffix[1:]}: {_first_line(exc)}") from exc
    except storage.StorageError as exc:
        raise InputFileError(str(exc)) from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def expand_inputs(
    paths: Iterable[storage.Location], s3: storage.S3Options | None = None
) -> list[storage.Location]:
    """Input files: files as given, directories as all input files under them (sorted).

    A path may be an ``s3://`` URI (a prefix stands for a directory); its bucket is checked
    first, so a missing bucket or refused credentials fail with one line naming them.

    Raises:
        InputFileError: a path is missing, a file is unreadable or has an unsupported type,
            a Parquet file has no valid footer, or a bucket cannot be used. Checked before
            anything is written.
    """
    files: list[storage.Location] = []
    for raw in paths:
        if storage.is_uri(raw):
            files += _expand_uri(str(raw), s3)
            continue
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputFileError(f"{path}: input path does not exist")
    for file in files:
        _preflight(file, s3)
    return list(dict.fromkeys(f if storage.is_uri(f) else Path(f).resolve() for f in files))


def _expand_uri(uri: str, s3: storage.S3Options | None) -> list[storage.Location]:
    import pyarrow.fs as pafs

    try:
        storage.check_bucket(uri, s3)
        info = storage.file_info(uri, s3)
        if info.type == pafs.FileType.Directory:
            return storage.list_files(uri, INPUT_SUFFIXES, s3)
    except storage.StorageError as exc:
        raise InputFileError(str(exc)) from exc
    if info.type == pafs.FileType.File:
        return [uri]
    raise InputFileError(f"{uri}: input path does not exist")


def _preflight(path: storage.Location, s3: storage.S3Options | None) -> None:
    suffix = storage.suffix(path)
    if suffix not in INPUT_SUFFIXES:
        name = Path(path).suffix if not storage.is_uri(path) else suffix
        raise InputFileError(f"{path}: unsupported file type {name!r}; expected {INPUT_SUFFIXES}")
    try:
        with _open(path, s3) as fh:
            fh.read(1)
            if suffix in PARQUET_SUFFIXES:
                pq.read_metadata(fh)
    except OSError as exc:
        if storage.is_uri(path):
            raise InputFileError(str(storage.explain(exc, path, s3))) from exc
        raise InputFileError(f"{path}: cannot read input file: {_first_line(exc)}") from exc
    except pa.ArrowException as exc:
        raise InputFileError(f"{path}: cannot read input file: {_first_line(exc)}") from exc
    except storage.StorageError as exc:
        raise InputFileError(str(exc)) from exc
