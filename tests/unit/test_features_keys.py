"""The build's key space: every id maps to its own key, and only ids of the space map.

The lookup hashes fixed-width bytes and checks each hit word for word, so these tests
compare it with a plain dict on ids chosen to stress it: multi-byte UTF-8, ids whose
padded bytes differ only past the first word, one id a prefix of another, the longest id
allowed, absent and over-long probes, sliced and dictionary arrays, and a space whose
hashes collide (forced), which must take the byte-wise path and agree too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from flywheel.features import keys as K
from flywheel.features.keys import KeySpace, distinct_sorted, fixed_width

IDS = [
    *[f"u{i}" for i in range(3000)],
    *[f"usr-{i:032x}" for i in range(500)],
    "a", "ab", "abc", "12345678", "1234567", "123456789", "Ω-1", "sku 3", "ü" * 64, "x" * 128,
]  # fmt: skip
ABSENT = ["nope", "x" * 129, "x" * 127, "a\u00e9", "abcd", "1234567 ", "u3000", "U1"]


def _space() -> KeySpace:
    return KeySpace(distinct_sorted([pa.array(IDS)]), pa.array(["i1"]))


def _reference(space: KeySpace, probe: list[str | None]) -> np.ndarray:
    index = {v: k for k, v in enumerate(space.users.to_pylist())}
    return np.array([index.get(v, -1) if v is not None else -1 for v in probe])


def _probe(seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    return [*rng.choice(IDS, 2000).tolist(), *ABSENT, None]


def test_every_id_maps_to_its_own_key_and_back() -> None:
    space = _space()
    keys = space.lookup("user", space.users)
    assert keys.tolist() == list(range(len(space.users)))
    assert space.ids("user", keys).to_pylist() == space.users.to_pylist()


@pytest.mark.parametrize("colliding", [False, True])
def test_lookup_equals_a_dict(colliding: bool) -> None:
    space = _space()
    search = space._search("user")
    if colliding:  # as if two ids of the space shared a hash: the byte-wise path
        K._SEARCH[(space.token, "user")] = dataclasses.replace(search, unique=False)
    probe = _probe()
    want = _reference(space, probe)
    assert (space.lookup("user", pa.array(probe, pa.string())) == want).all()
    sliced = pa.array(probe, pa.string()).slice(7, 500)
    assert (space.lookup("user", sliced) == want[7:507]).all()


def test_batches_map_through_their_dictionary_and_unknown_ids_are_minus_one() -> None:
    space = _space()
    probe = _probe(seed=1)
    want = _reference(space, probe)
    encoded = pa.array(probe, pa.string()).dictionary_encode()
    assert (space.user_keys(encoded) == want).all()
    # a second batch with an equal dictionary in new buffers: same keys (cached), and a
    # different dictionary of the same length is not mistaken for it
    again = pa.DictionaryArray.from_arrays(
        encoded.indices, pa.array(encoded.dictionary.to_pylist())
    )
    assert (space.user_keys(again) == want).all()
    other = pa.array(list(reversed(probe)), pa.string()).dictionary_encode()
    assert len(other.dictionary) == len(encoded.dictionary)
    assert (space.user_keys(other) == want[::-1]).all()
    chunked = pa.chunked_array([pa.array(probe[:100], pa.string()), pa.array(probe[100:])])
    assert (space.user_keys(chunked) == want).all()


def test_fixed_width_pads_with_nul_and_keeps_utf8_bytes() -> None:
    got = fixed_width(pa.array(["ab", "Ω", "", None, "abcdefgh"]), 8)
    assert got.tolist() == [b"ab", "Ω".encode(), b"", b"", b"abcdefgh"]
    assert got.dtype == np.dtype("S8")


def test_empty_space_maps_nothing() -> None:
    space = KeySpace(pa.array([], pa.string()), pa.array([], pa.string()))
    assert space.lookup("user", pa.array(["a", "b"])).tolist() == [-1, -1]
