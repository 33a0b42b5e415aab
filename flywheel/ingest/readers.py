"""Reading input files: Parquet, JSON lines and CSV, streamed in batches, as-is.

Readers decide no types: CSV is read as strings, Parquet keeps its own types and a JSON
field keeps its JSON type only when all its values share one; the column checks
(:mod:`flywheel.ingest.checks`) are the one place a value is judged. Lines that
cannot be parsed at all come back as ``rejects`` and are quarantined like bad rows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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


def _read_parquet(path: Path, batch_size: int) -> Iterator[RawBatch]:
    reader = pq.ParquetFile(path)
    for batch in reader.iter_batches(batch_size=batch_size):
        yield RawBatch(pa.Table.from_batches([batch]))


def _read_csv(path: Path, batch_size: int) -> Iterator[RawBatch]:
    """CSV read as strings (types are decided by the checks, not guessed by the reader)."""
    import pyarrow.csv as pacsv

    with path.open(newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        return
    rejects: list[tuple[str, str]] = []

    def on_invalid(row: Any) -> str:
        reason = f"malformed CSV row (expected {row.expected_columns} fields): line {row.number}"
        rejects.append((reason, row.text))
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False
        ),
    )
    tables = (pa.Table.from_batches([b]) for b in reader)
    for table in _rebatch(tables, batch_size):
        yield RawBatch(table, rejects[:])
        rejects.clear()
    if rejects:
        yield RawBatch(pa.table({name: pa.array([], pa.string()) for name in header}), rejects)


def _json_records(path: Path) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """``(record, line)`` per non-blank line (``record`` None when it is not a JSON object)."""
    with path.open(encoding="utf-8") as fh:
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


def _read_json(path: Path, batch_size: int) -> Iterator[RawBatch]:
    records: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    for record, line in _json_records(path):
        if record is None:
            rejects.append(("not a non-empty JSON object", line))
        else:
            records.append(record)
        if len(records) >= batch_size:
            yield RawBatch(_records_table(records), rejects)
            records, rejects = [], []
    if records or rejects:
        yield RawBatch(_records_table(records), rejects)


def read_raw(path: Path, batch_size: int = 250_000) -> Iterator[RawBatch]:
    """Stream a Parquet, JSON-lines or CSV file in batches of about ``batch_size`` rows.

    Raises:
        InputFileError: the file cannot be read or parsed as its type (naming the path).
    """
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        reader = _read_parquet
    elif suffix in JSON_SUFFIXES:
        reader = _read_json
    elif suffix in CSV_SUFFIXES:
        reader = _read_csv
    else:
        raise InputFileError(f"{path}: unsupported file type {suffix!r}; expected {INPUT_SUFFIXES}")
    try:
        yield from reader(path, batch_size)
    except (OSError, UnicodeDecodeError, pa.ArrowException, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read as {suffix[1:]}: {exc}") from exc


def expand_inputs(paths: Iterable[Path | str]) -> list[Path]:
    """Input files: files as given, directories as all input files under them (sorted).

    Raises:
        InputFileError: a path is missing, a file is unreadable or has an unsupported type,
            or a Parquet file has no valid footer. Checked before anything is written.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputFileError(f"{path}: input path does not exist")
    for path in files:
        _preflight(path)
    return list(dict.fromkeys(p.resolve() for p in files))


def _preflight(path: Path) -> None:
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise InputFileError(
            f"{path}: unsupported file type {path.suffix!r}; expected {INPUT_SUFFIXES}"
        )
    try:
        with path.open("rb") as fh:
            fh.read(1)
        if path.suffix.lower() in PARQUET_SUFFIXES:
            pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputFileError(f"{path}: cannot read input file: {exc}") from exc
