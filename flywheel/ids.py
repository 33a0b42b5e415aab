"""User and item ids: the shop's own strings, the same at every entry point.

An id is any non-blank string of at most :data:`MAX_ID_CHARS` characters with no control
characters (UUIDs, SKUs, hashed e-mails, integers written as text). Surrounding whitespace is
not part of an id: ingest and the serving API trim it the same way, so an id read from a
padded CSV cell finds its features when a client sends it. Integers are accepted where ids
arrive (typed Parquet/JSON columns, JSON request bodies) and read as their decimal text, so
``42`` and ``"42"`` are one id. Ids in every answer, log and table are strings.

Why strings end to end (lake, feature tables, Feast join keys, training sets, logs): the id
a user sends is the id they get back, and nothing outside the feature build needs to know
about surrogate keys. The feature build, whose aggregation loops want dense integers, maps
the strings of one run to dense ``int64`` codes itself (:mod:`flywheel.features.keys`) and
back again when it writes the tables; those codes never leave the run, so they need no
dictionary on disk, cannot go stale and cannot collide.
"""

from __future__ import annotations

import re
from typing import Final

#: Longest id accepted, in characters.
MAX_ID_CHARS: Final = 128

#: Characters an id may not contain (C0 controls and DEL): they break logs and CSVs.
CONTROL_CHARS: Final = r"[\x00-\x1f\x7f]"
_CONTROL = re.compile(CONTROL_CHARS)


class IdError(ValueError):
    """An id that breaks the rules; the message says which rule."""


def normalize_id(value: object) -> str:
    """The canonical id for ``value`` (a string or an integer), or :class:`IdError`.

    ``bool`` is refused although it is an ``int`` in Python: ``true`` is not an id.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise IdError(f"must be a string or an integer, got {type(value).__name__}")
    text = str(value).strip()
    problem = id_problem(text)
    if problem is not None:
        raise IdError(problem)
    return text


def id_problem(text: str) -> str | None:
    """What is wrong with an already-trimmed id, in the words errors use; None if fine."""
    if not text:
        return "is missing"
    if len(text) > MAX_ID_CHARS:
        return f"is longer than {MAX_ID_CHARS} characters"
    if _CONTROL.search(text):
        return "has control characters"
    return None
