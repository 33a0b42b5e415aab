"""Dense integer keys for the string ids of one feature build.

The aggregation loops (:mod:`flywheel.features.aggregate`) group and window by integer
entity keys, packed into one ``int64`` sort code; strings would make every one of those
passes several times slower. So a build first collects the distinct user and item ids of
the lake (and the catalog), sorts them, and uses each id's position as its key. Keys are a
bijection with the ids of this run, so no two ids can collide, and they never leave the
run: the published tables carry the ids themselves (:meth:`KeySpace.ids`).

Lookups go through a pandas ``Index``, whose hash table is built once per worker process
and reused by every batch that process maps (a pyarrow ``index_in`` would rebuild it per
call). Each batch is dictionary-encoded first, so only its distinct ids are looked up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandas as pd

#: Per-process cache of id indexes, keyed by (key space token, which).
_INDEXES: dict[tuple[str, str], pd.Index] = {}
#: Per-process cache of the last dictionary mapped, per kind: (identity, array, keys).
_LAST_DICTIONARY: dict[str, tuple[tuple[object, ...], pa.Array, np.ndarray]] = {}


def distinct_sorted(chunks: Iterable[pa.Array | pa.ChunkedArray]) -> pa.Array:
    """The distinct strings of all ``chunks`` (dictionary arrays allowed), sorted."""
    parts: list[pa.Array] = []
    for chunk in chunks:
        arrays = chunk.chunks if isinstance(chunk, pa.ChunkedArray) else [chunk]
        for arr in arrays:
            if pa.types.is_dictionary(arr.type):  # a dictionary holds each value once
                parts.append(arr.dictionary.cast(pa.string()))
            else:
                parts.append(pc.unique(arr.cast(pa.string())))
    if not parts:
        return pa.array([], pa.string())
    values = pc.unique(pa.concat_arrays(parts))
    return values.take(pc.sort_indices(values))


@dataclass(frozen=True)
class KeySpace:
    """The sorted distinct user and item ids of one build; key = position."""

    users: pa.Array
    items: pa.Array
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def _index(self, which: str) -> pd.Index:
        import pandas as pd

        cached = _INDEXES.get((self.token, which))
        if cached is None:
            values = self.users if which == "user" else self.items
            cached = pd.Index(values.to_numpy(zero_copy_only=False), dtype=object)
            if not any(k[0] == self.token for k in _INDEXES):
                _INDEXES.clear()  # one build at a time per process: drop older spaces
                _LAST_DICTIONARY.clear()
            _INDEXES[(self.token, which)] = cached
        return cached

    def _codes(self, which: str, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        assert isinstance(arr, pa.DictionaryArray)
        local = self._dictionary_keys(which, arr.dictionary)
        return local[np.asarray(arr.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]

    def _dictionary_keys(self, which: str, dictionary: pa.Array) -> np.ndarray:
        """Keys of a batch's dictionary; the batches of one Parquet row group share theirs.

        The cache holds the dictionary itself, so its buffers stay alive and an equal
        (address, offset, length) means the very same values, not a reused allocation.
        """
        data = dictionary.buffers()[2]
        ident = (which, data.address if data is not None else 0, dictionary.offset, len(dictionary))
        cached = _LAST_DICTIONARY.get(which)
        if cached is not None and cached[0] == ident:
            return cached[2]
        distinct = dictionary.to_numpy(zero_copy_only=False)
        local = self._index(which).get_indexer(distinct).astype(np.int64)
        _LAST_DICTIONARY[which] = (ident, dictionary, local)
        return local

    def user_keys(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Key of each user id (-1 for an id outside this space)."""
        return self._codes("user", ids)

    def item_keys(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Key of each item id (-1 for an id outside this space)."""
        return self._codes("item", ids)

    def ids(self, which: str, keys: np.ndarray) -> pa.Array:
        """The ids of ``keys`` (``which`` is ``"user"`` or ``"item"``)."""
        values = self.users if which == "user" else self.items
        return values.take(pa.array(np.asarray(keys, dtype=np.int64)))
