"""The shards contract: what the preprocess stage writes and the train stage reads.

A shards directory ``D`` holds ``D/{train,valid,test}/*.parquet`` (the float32 model
columns of the feature service the shards were built through,
:func:`~flywheel.ranking.model_features`; int8 ``label``, string ``group_id``, ids and
``event_timestamp``) and ``D/metadata.json`` (``feature_service``, ``feature_columns``).
:func:`inspect_shards` validates one from the Parquet footers alone; :func:`read_split`
loads a split in-process, on the columns a model asks for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from flywheel.ranking import FEATURE_SETS

if TYPE_CHECKING:
    import pyarrow as pa

LABEL: Final = "label"
GROUP: Final = "group_id"
SPLITS: Final[tuple[str, ...]] = ("train", "valid", "test")


class ShardError(ValueError):
    """The shards directory breaks the preprocess contract; the message says where and how."""


@dataclass(frozen=True)
class ShardsInfo:
    """What a validated shards directory holds."""

    root: Path
    metadata: dict[str, Any]
    files: dict[str, list[Path]]
    rows: dict[str, int]

    @property
    def feature_columns(self) -> list[str]:
        """The model input columns of these shards, in order."""
        return list(self.metadata["feature_columns"])


def inspect_shards(shards_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> ShardsInfo:
    """Validate a shards directory against the preprocess contract, reading only footers.

    Args:
        shards_dir: the directory holding ``metadata.json`` and one folder per split.
        splits: the splits that must be present and non-empty.

    Returns:
        The metadata, the Parquet files and the row count of each requested split.

    Raises:
        ShardError: missing/invalid ``metadata.json``, feature columns that differ from
            the model columns of its feature service, a missing or empty split, an
            unreadable Parquet file, or a file lacking a required column.
    """
    root = Path(shards_dir)
    metadata = _read_metadata(root)
    files: dict[str, list[Path]] = {}
    rows: dict[str, int] = {}
    for split in splits:
        files[split] = sorted((root / split).glob("*.parquet"))
        if not files[split]:
            raise ShardError(f"split {split!r} has no Parquet files in {root / split}")
        rows[split] = sum(_check_shard_file(f, metadata["feature_columns"]) for f in files[split])
        if rows[split] == 0:
            raise ShardError(f"split {split!r} in {root / split} has 0 rows; expected > 0")
    return ShardsInfo(root=root, metadata=metadata, files=files, rows=rows)


def _read_metadata(root: Path) -> dict[str, Any]:
    path = root / "metadata.json"
    if not path.is_file():
        raise ShardError(f"{path} does not exist; a shards directory needs its metadata.json")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ShardError(f"{path} must hold a JSON object; got {type(metadata).__name__}")
    for key, expected in (("label", LABEL), ("group", GROUP)):
        if metadata.get(key, expected) != expected:
            raise ShardError(f"{path}: {key!r} is {metadata[key]!r}; expected {expected!r}")
    # Shards written before services were versioned carry no name: ranking_v1's columns.
    service = metadata.get("feature_service", "ranking_v1")
    if service not in FEATURE_SETS:
        raise ShardError(
            f"{path}: feature_service {service!r} is unknown; expected one of "
            f"{', '.join(FEATURE_SETS)}"
        )
    want = list(FEATURE_SETS[service].model)
    columns = metadata.get("feature_columns")
    if columns != want:
        got = set(columns or [])
        raise ShardError(
            f"{path}: feature_columns do not match the model columns of {service} "
            f"(flywheel.ranking; missing {sorted(set(want) - got)}, unexpected "
            f"{sorted(got - set(want))}, order must match too); got {columns!r}"
        )
    return dict(metadata)


def _check_shard_file(path: Path, feature_columns: list[str]) -> int:
    """Return the row count of one shard after checking it opens and has the columns."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
        raise ShardError(f"shard {path} is not readable Parquet: {exc}") from exc
    names = set(parquet.schema_arrow.names)
    missing = [c for c in (*feature_columns, LABEL) if c not in names]
    if missing:
        raise ShardError(f"shard {path} lacks required columns {missing}")
    return int(parquet.metadata.num_rows)


def check_labels(info: ShardsInfo, split: str) -> dict[int, int]:
    """Count each label value in a split; raise ShardError unless both 0 and 1 occur.

    A single-class split cannot train a classifier nor score AUC, so it is refused early.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[int, int] = {}
    for path in info.files[split]:
        column = _read_columns(pq, path, [LABEL]).column(LABEL)
        for entry in pc.value_counts(column).to_pylist():
            counts[int(entry["values"])] = counts.get(int(entry["values"]), 0) + entry["counts"]
    if set(counts) - {0, 1}:
        raise ShardError(f"split {split!r}: label values {sorted(counts)}; expected 0 and 1")
    if len(counts) < 2:
        raise ShardError(
            f"split {split!r}: label has one class only ({counts}); expected both 0 and 1"
        )
    return counts


def _read_columns(pq: Any, path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except Exception as exc:  # a valid footer can still hide corrupt pages
        raise ShardError(f"shard {path} could not be read: {exc}") from exc


def read_split(
    info: ShardsInfo, split: str, features: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load one split in-process: ``(X float32 [n, n_features], y int8 [n], group_id [n])``.

    ``features``: the model columns to read (default: the shards' own); a ranking_v1
    champion reads its 21 from ranking_v2 shards, whose columns start with v1's.

    Raises:
        ShardError: a requested column is not in the shards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = info.feature_columns if features is None else list(features)
    absent = [c for c in features if c not in info.feature_columns]
    if absent:
        raise ShardError(
            f"shards {info.root} ({info.metadata.get('feature_service', 'ranking_v1')}) lack "
            f"the model columns {absent}"
        )
    columns = [*features, LABEL, GROUP]
    table = pa.concat_tables(_read_columns(pq, p, columns) for p in info.files[split])
    x = _feature_matrix(table, features)
    y = table.column(LABEL).to_numpy().astype(np.int8)
    groups = table.column(GROUP).to_numpy(zero_copy_only=False)
    return x, y, groups


def _feature_matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    """The model inputs of a shard table: float32, columns in ``features`` order."""
    return np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in features])
