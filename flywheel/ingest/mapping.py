"""Source mappings: a declarative description of how a source layout becomes our events.

A mapping is a YAML file validated by :class:`SourceMapping` (unknown keys are errors that
name the key). Built-in mappings live in ``flywheel/ingest/mappings/<name>.yaml``
(``retailrocket``, ``rees46``); ``flywheel ingest --mapping`` takes a built-in name or the
path of a user's file. The pipeline's ``mapping`` parameter also takes the YAML text itself
(:func:`mapping_argument` turns a caller's file into it, :func:`mapping_from_argument` reads
it back in the ingest pod). Example (the REES46 preset)::

    name: rees46
    columns:                  # our field: the source column
      user_id: user_id
      item_id: product_id
      event_type: event_type
      ts: event_time
      session_id: user_session
    timestamps: {format: iso}  # iso (zone required unless `zone:`), epoch_s, epoch_ms
    event_types: {view: view, cart: cart, purchase: purchase}  # source word: ours
    drop_event_types: [remove_from_cart]                        # dropped, counted
    device: unknown            # when the source has no device column (or a blank cell)
    items:                     # item attributes carried on events -> the catalog
      category: [category_code, category_id]   # first non-blank wins
      price: price

What a mapping derives when the source lacks it: ``event_id`` (a hash of the mapped user,
item, event type and time, :func:`flywheel.ingest.derive.event_ids`) and ``session_id``
(by an inactivity gap, ``sessions.gap_minutes``, default 30,
:func:`flywheel.ingest.derive.session_ids`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flywheel.ingest.errors import IngestError
from flywheel.schemas import EVENT_TYPES

EventType = Literal["view", "cart", "purchase", "click"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]


class MappingError(IngestError):
    """A mapping file is missing, not YAML, breaks the schema, or does not fit the input."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Strict):
    """Which source column feeds each event field; optional ones are derived when absent."""

    user_id: str
    item_id: str
    event_type: str
    ts: str
    event_id: str | None = None
    session_id: str | None = None
    device: str | None = None


class Timestamps(_Strict):
    """How ``ts`` is written: ISO (with a zone, or naive in ``zone``) or epoch numbers (UTC)."""

    format: Literal["iso", "epoch_s", "epoch_ms"] = "iso"
    zone: str | None = None

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {zone!r}") from exc
        return zone


class Sessions(_Strict):
    """Session derivation when ``columns.session_id`` is absent."""

    gap_minutes: float = Field(default=30.0, gt=0)


class ItemAttributes(_Strict):
    """Item attributes on events: the catalog is derived from them (latest event wins)."""

    category: list[str] = Field(min_length=1)
    price: str


class SourceMapping(_Strict):
    """One source layout -> the event contract (see the module docstring for an example)."""

    name: str
    description: str = ""
    columns: Columns
    timestamps: Timestamps = Timestamps()
    event_types: dict[str, EventType] = Field(min_length=1)
    drop_event_types: list[str] = []
    sessions: Sessions = Sessions()
    device: str = Field(default="unknown", min_length=1)
    items: ItemAttributes | None = None

    @field_validator("event_types")
    @classmethod
    def _lower_words(cls, words: dict[str, EventType]) -> dict[str, EventType]:
        return {w.strip().lower(): t for w, t in words.items()}

    @field_validator("drop_event_types")
    @classmethod
    def _lower_drops(cls, words: list[str]) -> list[str]:
        return [w.strip().lower() for w in words]

    @model_validator(mode="after")
    def _no_word_twice(self) -> SourceMapping:
        both = sorted(set(self.event_types) & set(self.drop_event_types))
        if both:
            raise ValueError(f"event types both mapped and dropped: {both}")
        return self

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads, in a stable order, without repeats."""
        cols = [c for c in self.columns.model_dump().values() if c is not None]
        if self.items is not None:
            cols += [*self.items.category, self.items.price]
        return list(dict.fromkeys(cols))

    def field_sources(self) -> dict[str, str]:
        """Our field name -> the source column it comes from (for quarantine reasons)."""
        out = {k: v for k, v in self.columns.model_dump().items() if v is not None}
        if self.items is not None:
            out |= {"category": self.items.category[0], "price": self.items.price}
        return out


def builtin_mappings() -> list[str]:
    """Names of the mappings shipped in ``flywheel/ingest/mappings``."""
    folder = resources.files("flywheel.ingest") / "mappings"
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml"))


def load_mapping(name_or_path: str | Path) -> SourceMapping:
    """A built-in mapping by name, or a mapping YAML file by path.

    Raises:
        MappingError: unknown name, unreadable file, not YAML, or a key that breaks the
            schema (the message names the key, e.g. ``columns.usr_id``).
    """
    text_name = str(name_or_path)
    path = Path(name_or_path)
    if _names_a_file(path):
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"mapping {where}: cannot read: {exc}") from exc
    elif text_name in builtin_mappings():
        where = f"built-in mapping {text_name!r}"
        text = (resources.files("flywheel.ingest") / "mappings" / f"{text_name}.yaml").read_text()
    else:
        raise MappingError(
            f"mapping {text_name!r} is neither a YAML file nor a built-in mapping "
            f"(built-in: {', '.join(builtin_mappings())})"
        )
    return parse_mapping(text, where)


def _names_a_file(path: Path) -> bool:
    return path.suffix in (".yaml", ".yml") or path.exists()


def is_mapping_text(value: str) -> bool:
    """Whether a ``mapping`` pipeline argument is the YAML itself, not a name or a path.

    Mapping YAML always spans lines (block style) or starts with ``{`` (flow style); a
    built-in name or a file path does neither.
    """
    return "\n" in value or value.lstrip().startswith("{")


def mapping_argument(value: str) -> str:
    """The pipeline's ``mapping`` argument for ``value`` given on this machine, validated.

    A built-in name stays a name (every image ships the built-ins); a mapping file becomes
    its YAML text, because the pipeline's pods cannot read the caller's files; YAML text
    stays as it is; ``""`` means no mapping. Validating here makes a bad key fail before
    a run is started, naming the key.

    Raises:
        MappingError: as :func:`load_mapping` or :func:`parse_mapping`.
    """
    if not value.strip():
        return ""
    if is_mapping_text(value):
        parse_mapping(value, "mapping text")
        return value
    load_mapping(value)
    path = Path(value)
    return path.read_text(encoding="utf-8") if _names_a_file(path) else value


def mapping_from_argument(value: str) -> SourceMapping | None:
    """The mapping a pipeline's ``mapping`` argument stands for: None for ``""``, else the
    YAML text itself (:func:`is_mapping_text`), a built-in name or a YAML path in the pod.

    Raises:
        MappingError: as :func:`load_mapping` or :func:`parse_mapping`.
    """
    if not value.strip():
        return None
    if is_mapping_text(value):
        return parse_mapping(value, "mapping parameter")
    return load_mapping(value)


def parse_mapping(text: str, where: str = "<mapping>") -> SourceMapping:
    """Validate mapping YAML text; errors name ``where`` and each offending key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MappingError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return SourceMapping.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        ]
        raise MappingError(f"{where}: " + "; ".join(problems)) from exc
