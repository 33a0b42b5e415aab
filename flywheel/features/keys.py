"""Dense integer keys for the string ids of one feature build.

The aggregation loops (:mod:`flywheel.features.aggregate`) group and window by integer
entity keys, packed into one ``int64`` sort code; strings would make every one of those
passes several times slower. So a build first collects the distinct user and item ids of
the lake (and the catalog), sorts them, and uses each id's position as its key. Keys are a
bijection with the ids of this run, so no two ids can collide, and they never leave the
run: the published tables carry the ids themselves (:meth:`KeySpace.ids`).

Lookups need no Python string objects: each id becomes a fixed-width row of bytes (the
longest id's UTF-8 length, NUL-padded; ids hold no NUL), read as 64-bit words and hashed
with numpy; the space's hashes are sorted once per worker process, a batch's hashes are
binary-searched in them and every hit is checked word for word, so a hash collision can
never map an id to another's key (a space whose own ids collide falls back to a byte-wise
binary search). Memory: about ``n * (width + 16)`` bytes per process, where a pandas
``Index`` of the same strings took ~100 MiB for 327k ids, in each of Ray's workers.
Each batch is dictionary-encoded first, so only its distinct ids are looked up, and the
batches of one Parquet row group share a dictionary, which is looked up once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Per-process cache of the searchable ids, keyed by (key space token, which).
_SEARCH: dict[tuple[str, str], _Search] = {}
#: Per-process cache of the last dictionary mapped, per kind: (dictionary, keys).
_LAST_DICTIONARY: dict[str, tuple[pa.Array, np.ndarray]] = {}
#: Rows converted to fixed width at a time (bounds the index temporaries).
_CHUNK_ROWS = 1 << 20


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


def _byte_lengths(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start offsets, byte lengths, data bytes) of a string array (nulls: length 0)."""
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    n = len(values)
    offsets = np.frombuffer(
        values.buffers()[1], dtype=np.int32, count=n + 1, offset=values.offset * 4
    ).astype(np.int64)
    data_buf = values.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    if values.null_count:
        lengths = np.where(values.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    return offsets[:-1], lengths, data


def fixed_width(values: pa.Array, width: int) -> np.ndarray:
    """``values`` as numpy ``S<width>`` byte strings, NUL-padded (longer ones cut: callers
    check lengths). Ids hold no NUL (no control characters), so padding cannot collide."""
    return _fixed(_byte_lengths(values), width)


def _fixed(parts: tuple[np.ndarray, np.ndarray, np.ndarray], width: int) -> np.ndarray:
    """:func:`fixed_width` from the ``_byte_lengths`` of the values, read once by callers
    that need the lengths too."""
    starts, lengths, data = parts
    width = max(width, 1)
    out = np.zeros((len(starts), width), np.uint8)
    flat = out.reshape(-1)
    for lo in range(0, len(starts), _CHUNK_ROWS):
        s, n = starts[lo : lo + _CHUNK_ROWS], np.minimum(lengths[lo : lo + _CHUNK_ROWS], width)
        total = int(n.sum())
        if total == 0:
            continue
        rows = np.arange(lo, lo + len(n), dtype=np.int64)
        # byte j of row r goes to flat[r * width + j] and comes from data[s[r] + j]
        shift = np.repeat(rows * width - np.cumsum(n) + n, n)
        pos = np.arange(total, dtype=np.int64)
        flat[pos + shift] = data[pos + np.repeat(s - np.cumsum(n) + n, n)]
    return out.view(f"S{width}").reshape(-1)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _words(fixed: np.ndarray) -> np.ndarray:
    """Fixed-width byte strings as (n, width / 8) uint64 words (width a multiple of 8)."""
    return fixed.view(np.uint64).reshape(len(fixed), fixed.dtype.itemsize // 8)


def _hash(words: np.ndarray) -> np.ndarray:
    """A 64-bit mix of each row of words (splitmix64 finaliser after each word)."""
    h = np.zeros(len(words), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * _GOLDEN
            h ^= h >> np.uint64(31)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(29)
    return h


@dataclass(frozen=True)
class _Search:
    """One side of a key space, searchable: words, sorted hashes and their keys."""

    width: int  # bytes per id, a multiple of 8
    words: np.ndarray  # (n, width / 8) uint64, in key order
    hashes: np.ndarray  # sorted
    keys: np.ndarray  # key of each sorted hash
    unique: bool  # no two ids share a hash (else: byte-wise search)

    @classmethod
    def of(cls, values: pa.Array) -> _Search:
        parts = _byte_lengths(values)
        width = -(-max(int(parts[1].max(initial=1)), 1) // 8) * 8
        words = _words(_fixed(parts, width))
        hashes = _hash(words)
        keys = np.argsort(hashes, kind="stable")
        hashes = hashes[keys]
        unique = len(hashes) < 2 or bool(np.all(hashes[1:] != hashes[:-1]))
        return cls(width, words, hashes, keys, unique)

    def find(self, values: pa.Array) -> np.ndarray:
        """Key of each value (-1 where absent)."""
        n = len(self.keys)
        if n == 0:
            return np.full(len(values), -1, np.int64)
        parts = _byte_lengths(values)
        lengths = parts[1]
        probe = _words(_fixed(parts, self.width))
        if self.unique:
            pos = np.searchsorted(self.hashes, _hash(probe)).clip(0, n - 1)
            cand = self.keys[pos]
        else:  # a collision inside the space: exact byte-wise search instead
            rows = self.words.view(f"S{self.width}").reshape(-1)
            order = np.argsort(rows, kind="stable")
            pos = np.searchsorted(rows[order], probe.view(f"S{self.width}").reshape(-1))
            cand = order[pos.clip(0, n - 1)]
        found = (self.words[cand] == probe).all(axis=1) & (lengths <= self.width) & (lengths > 0)
        return np.where(found, cand, -1).astype(np.int64)


@dataclass(frozen=True)
class KeySpace:
    """The sorted distinct user and item ids of one build; key = position."""

    users: pa.Array
    items: pa.Array
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def _search(self, which: str) -> _Search:
        cached = _SEARCH.get((self.token, which))
        if cached is None:
            if not any(k[0] == self.token for k in _SEARCH):
                _SEARCH.clear()  # one build at a time per process: drop older spaces
                _LAST_DICTIONARY.clear()
            values = self.users if which == "user" else self.items
            cached = _SEARCH[(self.token, which)] = _Search.of(values)
        return cached

    def _codes(self, which: str, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if isinstance(ids, pa.ChunkedArray):
            if pa.types.is_dictionary(ids.type) and ids.num_chunks > 1:
                # each chunk's own dictionary (chunks of several files need not share one)
                parts = [self._codes(which, c) for c in ids.chunks]
                return np.concatenate(parts) if parts else np.zeros(0, np.int64)
            arr = ids.combine_chunks()
        else:
            arr = ids
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        assert isinstance(arr, pa.DictionaryArray)
        local = self._dictionary_keys(which, arr.dictionary)
        indices = arr.indices
        if indices.null_count:  # a null id is in no space
            local = np.append(local, -1)
            indices = indices.fill_null(len(local) - 1)
        return local[np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)]

    def _dictionary_keys(self, which: str, dictionary: pa.Array) -> np.ndarray:
        """Keys of a batch's dictionary; the batches of one Parquet row group share theirs
        (equal values in new buffers), so an equal dictionary is looked up once."""
        cached = _LAST_DICTIONARY.get(which)
        if cached is not None and cached[0].equals(dictionary):
            return cached[1]
        local = self.lookup(which, dictionary)
        _LAST_DICTIONARY[which] = (dictionary, local)
        return local

    def lookup(self, which: str, values: pa.Array) -> np.ndarray:
        """Key of each id in ``values`` (-1 for an id outside this space)."""
        return self._search(which).find(values)

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
