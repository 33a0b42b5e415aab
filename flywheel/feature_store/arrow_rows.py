"""Arrow record batches straight to the rows Feast's SQLite online store holds.

Feast's write path turns every value of a batch into a Python ``ValueProto`` first
(``feast.utils._convert_arrow_to_proto``) and then, per value, serializes it and derives
its text: measured on a day's materialization (366k keys, ~3M values) that conversion took
22 s of 53 s and the per-value loop most of the rest. This module makes the same rows,
``(entity_key, feature_name, value, value_text, event_ts, created_ts)``, from the Arrow
columns directly:

- the entity key in Feast's own serialization (version 3: key count, each join key's name,
  then each value's type, length and bytes, names sorted), from the key columns;
- ``int64``, ``double`` and ``string`` features without nulls or NaN encoded as the
  ``ValueProto`` wire bytes (field tag, then varint, little-endian double or length-prefixed
  UTF-8), each distinct value once per batch, and their text as ``str()`` of the value,
  which is what Feast's ``extract_text_and_num`` gives; ``list<string>`` and
  ``list<double>`` features without nulls or NaN as ``string_list_val`` /
  ``double_list_val`` bytes (no text);
- any other column (nulls, NaN, other types) through Feast's own
  ``python_values_to_proto_values``, exactly as Feast would;
- timestamps through the store's own conversion, once per distinct value.

:func:`encode` returns None for a batch it cannot encode (a key column that is not a
non-null string or int64), and the caller then takes Feast's path. The rows are the same
bytes Feast writes (``tests/unit/test_arrow_rows.py`` runs Feast's path on a random batch of
every feature view's schema, edge values included, and compares), so a store written here
reads back through Feast.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: One stored row: entity key, feature name, value bytes, value text, event and created
#: epoch seconds (as Feast's SQLite store writes them).
Row = tuple[bytes, str, bytes, str | None, int | None, int | None]
#: Serialization version of the entity keys this module writes.
KEY_VERSION = 3


def _tag(field: str, wire: int) -> bytes:
    from feast.protos.feast.types.Value_pb2 import Value

    return bytes([(Value.DESCRIPTOR.fields_by_name[field].number << 3) | wire])


def _varint(value: int) -> bytes:
    """Protobuf varint of an int64 (negatives as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _plain(column: pa.Array) -> bool:
    """No nulls, and for floats no NaN (Feast writes those as an empty value)."""
    if column.null_count:
        return False
    if pa.types.is_floating(column.type):
        return not pc.any(pc.is_nan(column)).as_py()
    return True


def _encoded(
    values: np.ndarray, encode: Callable[[Any], tuple[bytes, str]], keys: np.ndarray | None = None
) -> list[tuple[bytes, str]]:
    """Each value's (bytes, text), computed once per distinct ``keys`` entry (the values
    themselves by default; a double's bits, since ``0.0 == -0.0`` but they differ)."""
    seen: dict[Any, tuple[bytes, str]] = {}
    out = []
    for k, v in zip((values if keys is None else keys).tolist(), values.tolist(), strict=True):
        hit = seen.get(k)
        if hit is None:
            hit = seen[k] = encode(v)
        out.append(hit)
    return out


def _feature_values(column: pa.Array, value_type: Any) -> list[tuple[bytes, str | None]]:
    """(value bytes, value text) of each row of one feature column."""
    from feast.value_type import ValueType

    if _plain(column):
        if value_type == ValueType.INT64 and pa.types.is_signed_integer(column.type):
            tag = _tag("int64_val", 0)
            return _encoded(column.to_numpy(), lambda v: (tag + _varint(v), str(v)))  # type: ignore[return-value]
        if value_type == ValueType.DOUBLE and pa.types.is_float64(column.type):
            tag = _tag("double_val", 1)
            pack = struct.Struct("<d").pack
            floats = column.to_numpy()
            return _encoded(floats, lambda v: (tag + pack(v), str(v)), floats.view(np.int64))  # type: ignore[return-value]
        if value_type == ValueType.STRING and pa.types.is_string(column.type):
            tag = _tag("string_val", 2)

            def text(v: str) -> tuple[bytes, str]:
                raw = v.encode("utf8")
                return tag + _varint(len(raw)) + raw, v

            return _encoded(np.asarray(column.to_pylist(), dtype=object), text)  # type: ignore[return-value]
        listed = _list_values(column, value_type)
        if listed is not None:
            return listed
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [(p.SerializeToString(), extract_text_and_num(p, False)[0]) for p in protos]


def _list_values(column: pa.Array, value_type: Any) -> list[tuple[bytes, str | None]] | None:
    """A ``list<string>`` or ``list<double>`` column without nulls (lists or elements) or
    NaN as ``string_list_val`` / ``double_list_val`` bytes (a nested message of repeated
    field 1; doubles packed); None for any other column. Lists have no text."""
    from feast.value_type import ValueType

    if not pa.types.is_list(column.type) or column.values.null_count:
        return None
    inner = column.values
    offsets = column.offsets.to_numpy()
    if value_type == ValueType.STRING_LIST and pa.types.is_string(inner.type):
        tag = _tag("string_list_val", 2)
        words = [
            (b"\x0a" + _varint(len(w)) + w) for w in (v.encode("utf8") for v in inner.to_pylist())
        ]
        out: list[tuple[bytes, str | None]] = []
        for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            body = b"".join(words[lo:hi])
            out.append((tag + _varint(len(body)) + body, None))
        return out
    if value_type == ValueType.DOUBLE_LIST and pa.types.is_float64(inner.type):
        if not _plain(inner):
            return None
        tag = _tag("double_list_val", 2)
        data = inner.to_numpy().astype("<f8").tobytes()
        doubles: list[tuple[bytes, str | None]] = []
        for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            packed = b"\x0a" + _varint(8 * (hi - lo)) + data[8 * lo : 8 * hi] if hi > lo else b""
            doubles.append((tag + _varint(len(packed)) + packed, None))
        return doubles
    return None


def _key_values(column: pa.Array, value_type: Any) -> list[bytes] | None:
    """Each row's ``type | length | bytes`` part of the entity key, or None if unsupported."""
    from feast.value_type import ValueType

    if column.null_count:
        return None
    if value_type == ValueType.STRING and pa.types.is_string(column.type):
        head = struct.pack("<I", ValueType.STRING.value)
        return [
            head + struct.pack("<I", len(raw)) + raw
            for raw in (v.encode("utf8") for v in column.to_pylist())
        ]
    if value_type == ValueType.INT64 and pa.types.is_int64(column.type):
        head = struct.pack("<II", ValueType.INT64.value, 8)
        return [head + struct.pack("<q", v) for v in column.to_pylist()]
    return None


def entity_keys(batch: pa.RecordBatch, join_keys: dict[str, Any]) -> list[bytes] | None:
    """Feast's serialized entity key (version 3) of each row, or None if unsupported."""
    from feast.value_type import ValueType

    names = sorted(join_keys)  # Feast sorts a multi-key entity's names (a pair's values)
    parts = []
    for name in names:
        part = _key_values(batch.column(name), join_keys[name])
        if part is None:
            return None
        parts.append(part)
    head = struct.pack("<I", len(names)) + b"".join(
        struct.pack("<II", ValueType.STRING.value, len(n.encode("utf8"))) + n.encode("utf8")
        for n in names
    )
    if len(parts) == 1:
        return [head + p for p in parts[0]]
    return [head + b"".join(row) for row in zip(*parts, strict=True)]


def _epochs(column: pa.Array, epoch: Callable[[datetime | None], int | None]) -> list[Any]:
    """The store's epoch of each timestamp, converted the way Feast's path hands them over
    (a naive UTC ``datetime`` per value), once per distinct value."""
    import pandas as pd

    if column.null_count:  # rare: every value the way Feast's path converts it
        stamps = pd.to_datetime(column.to_numpy(zero_copy_only=False))
        return [epoch(None if pd.isna(ts) else ts.to_pydatetime()) for ts in stamps]
    raw = column.to_numpy(zero_copy_only=False)
    distinct, inverse = np.unique(raw, return_inverse=True)
    converted = [epoch(ts.to_pydatetime()) for ts in pd.to_datetime(distinct)]
    return [converted[i] for i in inverse.tolist()]


def encode(
    batch: pa.RecordBatch,
    features: list[tuple[str, Any]],
    join_keys: dict[str, Any],
    timestamp: str,
    created: str | None,
    epoch: Callable[[datetime | None], int | None],
) -> Iterator[Row] | None:
    """The rows of ``batch`` sorted by entity key (stably: a later duplicate key wins the
    upsert), each key's features in ``features`` order; None if a key column is not
    supported (the caller then converts through Feast).

    Args:
        batch: the view's rows (its join keys, features and timestamp columns).
        features: (column, Feast ``ValueType``) per feature, in the view's order.
        join_keys: join key column -> its Feast ``ValueType``.
        timestamp / created: the event and (optional) created timestamp columns.
        epoch: the store's timestamp conversion (naive UTC ``datetime`` -> stored value).
    """
    keys = entity_keys(batch, join_keys)
    if keys is None:
        return None
    values = [(name, _feature_values(batch.column(name), vt)) for name, vt in features]
    event = _epochs(batch.column(timestamp), epoch)
    made = _epochs(batch.column(created), epoch) if created else [None] * batch.num_rows
    order = sorted(range(batch.num_rows), key=keys.__getitem__)

    def rows() -> Iterator[Row]:
        for i in order:
            key, ev, cr = keys[i], event[i], made[i]
            for name, column in values:
                raw, text = column[i]
                yield key, name, raw, text, ev, cr

    return rows()
