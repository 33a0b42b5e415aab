"""Online feature reading: a feature service's values for one user and many items.

:class:`OnlineFeatureReader` answers what ``feature_store.online_features`` answers (same
columns, same nulls for missing or expired values) from the online store's own
``online_read``. Per request and view it reads the distinct entity keys of the request in
one batch: one key for a user view, the distinct (user, category) or (user, item) keys for
a composite one. Given an :class:`~flywheel.serving.item_cache.ItemSideViews`, views whose
key holds no user (item and category views: any number of them) come from memory instead
(see that module for when they are re-read).

``read_columns(..., degraded=True)`` reads nothing: the online store is unreachable
(:mod:`~flywheel.serving.store_health`), so user-keyed views come back missing, as for a
new user, and item-side views hold what memory still has (missing where it has nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np

from flywheel.packed_history import expand, packed_view_of
from flywheel.serving.item_cache import CachedView, ItemSideViews, is_item_side

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, FeatureView

#: The view holding each item's category, the join key of the user x category views.
CATALOG_VIEW: Final = "item_catalog"
#: The entity columns of a request's rows (a view's key is made of some of them).
ENTITY_COLUMNS: Final = ("user_id", "item_id", "category")

_PROTO_FIELD = {"INT64": "int64_val", "INT32": "int32_val", "STRING": "string_val"}
_STRING_TYPES: Final = ("STRING",)


def _proto_value(proto: Any) -> Any:
    kind = proto.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(proto, kind)


def _float(value: Any) -> float:
    # A number (bool is an int); anything else (null, text, a list) is not one.
    return float(value) if isinstance(value, int | float) else math.nan


class Row(NamedTuple):
    """One entity's row as the online store holds it (no ttl applied)."""

    #: Event time, epoch seconds (``stamp.timestamp()``).
    ts: float
    stamp: datetime
    values: dict[str, Any]
    #: The reader's features in its order, as floats (NaN: missing or not a number).
    floats: tuple[float, ...]


class ViewReader:
    """Reads some features of one feature view from the online store by entity key."""

    def __init__(
        self,
        store: FeatureStore,
        view: FeatureView,
        features: Sequence[str] | None = None,
        online: Any = None,
    ) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config

        names = [f.name for f in view.features]
        self.view = view
        #: The features read (default: all of the view's, as a cache of the view needs).
        self.features = tuple(features) if features is not None else tuple(names)
        self.config = store.config
        #: The online store instance read through (given: shared, e.g. the service's
        #: fail-fast one, :func:`~flywheel.serving.store_health.serving_online_store`).
        self.online = online or get_online_store_from_config(store.config.online_store)
        self.join_keys = tuple(c.name for c in view.entity_columns)
        self.key_fields = tuple(
            _PROTO_FIELD[c.dtype.to_value_type().name] for c in view.entity_columns
        )
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        self.ttl_s = ttl if ttl > 0 else None
        self._key_protos: tuple[Any, Any] | None = None

    def oldest(self, as_of: datetime) -> float:
        """The earliest event time (epoch seconds) a row may have to be fresh at ``as_of``."""
        return as_of.timestamp() - self.ttl_s if self.ttl_s else -math.inf

    def fetch(self, keys: Sequence[tuple[Any, ...]]) -> list[Row | None]:
        """Per key (values in ``join_keys`` order): its :class:`Row`, or ``None`` when the
        store has no row; one ``online_read`` for all keys; no ttl applied."""
        if not keys:
            return []
        if self._key_protos is None:
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            self._key_protos = (EntityKey, Value)
        entity_key, value = self._key_protos
        join_keys = list(self.join_keys)
        protos = [
            entity_key(
                join_keys=join_keys,
                entity_values=[value(**{f: v}) for f, v in zip(self.key_fields, key, strict=True)],
            )
            for key in keys
        ]
        answers = self.online.online_read(self.config, self.view, protos, list(self.features))
        out: list[Row | None] = []
        for ts, values in answers:
            if ts is None or values is None:
                out.append(None)
                continue
            found = {f: _proto_value(values[f]) for f in self.features if f in values}
            floats = tuple(_float(found.get(f)) for f in self.features)
            out.append(Row(ts.timestamp(), ts, found, floats))
        return out

    def read(
        self, keys: Sequence[tuple[Any, ...]], as_of: datetime
    ) -> list[tuple[datetime, dict[str, Any]] | None]:
        """Per key (values in ``join_keys`` order): ``(event time, {feature: value})``, or
        ``None`` when the store has no row or the row is older than the view's ttl."""
        oldest = self.oldest(as_of)
        return [
            None if row is None or row.ts < oldest else (row.stamp, row.values)
            for row in self.fetch(keys)
        ]


class _ViewPlan:
    """How one view of a feature service is read for a request: its key columns, where its
    rows come from (the online store, or memory) and which of the row's floats it serves."""

    def __init__(self, reader: ViewReader, features: Sequence[str], cache: CachedView | None):
        self.reader, self.cache = reader, cache
        self.name = str(reader.view.name)
        self.features = tuple(features)
        unknown = [k for k in reader.join_keys if k not in ENTITY_COLUMNS]
        if unknown:
            raise ValueError(
                f"feature view {self.name!r} is keyed by {unknown}; serving can key a view "
                f"only by {list(ENTITY_COLUMNS)} (the category comes from {CATALOG_VIEW})"
            )
        strings = {f.name for f in reader.view.features if f.dtype.to_value_type().name in
                   _STRING_TYPES}  # fmt: skip
        self.strings = [f for f in self.features if f in strings]
        self.numbers = [f for f in self.features if f not in strings]
        position = {f: j for j, f in enumerate(reader.features)}
        self.columns = [position[f] for f in self.numbers]
        self.all_columns = self.columns == list(range(len(reader.features)))
        self.nan_row = (math.nan,) * len(reader.features)

    def rows(self, keys: list[tuple[Any, ...]], degraded: bool = False) -> list[Row | None]:
        if degraded:  # no reads: what memory holds
            return self.cache.held(keys) if self.cache is not None else [None] * len(keys)
        if self.cache is not None:
            return self.cache.rows(keys)
        distinct = list(dict.fromkeys(keys))
        answers = dict(zip(distinct, self.reader.fetch(distinct), strict=True))
        return [answers[key] for key in keys]

    def fill(
        self, rows: list[Row | None], as_of: datetime, columns: dict[str, Any]
    ) -> list[Row | None]:
        """Put this view's feature columns of ``rows`` into ``columns``; return the rows
        fresh at ``as_of`` (an expired row as ``None``)."""
        oldest = self.reader.oldest(as_of)
        fresh = [row if row is not None and row.ts >= oldest else None for row in rows]
        if self.numbers:
            nan_row = self.nan_row
            matrix = np.array([nan_row if r is None else r.floats for r in fresh], np.float64)
            matrix = matrix.reshape(len(fresh), len(nan_row))
            if not self.all_columns:
                matrix = matrix[:, self.columns]
            for j, name in enumerate(self.numbers):
                columns[name] = matrix[:, j]
        for name in self.strings:
            columns[name] = [None if r is None else r.values.get(name) for r in fresh]
        return fresh


class _PackedPlan:
    """A view served from its packed per-user online form (``user_item`` from
    ``user_item_latest``, :mod:`flywheel.packed_history`): one key read per request."""

    def __init__(
        self, store: FeatureStore, name: str, features: Sequence[str], online: Any = None
    ) -> None:
        packed = packed_view_of(name)
        assert packed is not None
        view = store.get_feature_view(packed)
        self.reader = ViewReader(store, view, ["ui_items", "ui_values"], online)
        ttl = store.get_feature_view(name).ttl
        self.ttl_s = ttl.total_seconds() if ttl and ttl.total_seconds() > 0 else None
        self.name, self.features = name, tuple(features)

    def fill(
        self,
        user: str,
        items: list[str],
        as_of: datetime,
        columns: dict[str, Any],
        degraded: bool = False,
    ) -> None:
        found = None if degraded else self.reader.read([(user,)], as_of)[0]
        packed_items = packed_values = None
        if found is not None:
            packed_items = list(found[1]["ui_items"].val)
            packed_values = np.asarray(found[1]["ui_values"].val, dtype=np.float64)
        columns.update(
            expand(packed_items, packed_values, items, as_of.timestamp(), self.ttl_s, self.features)
        )


class OnlineFeatureReader:
    """One user's features against many items through a feature service, fast.

    Answers what ``feature_store.online_features`` answers (same columns, same nulls for
    missing or expired values) with the service resolved once and, per request, one
    ``online_read`` per view over the distinct entity keys of the request; with
    ``item_views``, the views keyed without a user are read from memory instead.
    """

    def __init__(
        self,
        store: FeatureStore,
        service_name: str,
        item_views: ItemSideViews | None = None,
        online: Any = None,
    ) -> None:
        service = store.get_feature_service(service_name)
        self.service_name = service_name
        wanted = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
        cached = item_views is not None and item_views.enabled

        def reader(name: str, features: Sequence[str]) -> tuple[ViewReader, CachedView | None]:
            view = store.get_feature_view(name)
            if cached and is_item_side(view):
                assert item_views is not None
                cache = item_views.view(ViewReader(store, view, online=online))  # all: shared
                return cache.reader, cache
            return ViewReader(store, view, features, online), None

        # The catalog is read anyway for the category join key: one read serves both.
        extra = [f for f in wanted.get(CATALOG_VIEW, []) if f != "category"]
        catalog_reader, catalog_cache = reader(CATALOG_VIEW, ["category", *extra])
        self.catalog = _ViewPlan(catalog_reader, ["category"], catalog_cache)
        self.views: list[_ViewPlan] = []
        self.packed: list[_PackedPlan] = []
        for name, features in wanted.items():
            if packed_view_of(name) is not None:
                self.packed.append(_PackedPlan(store, name, features, online))
                continue
            found = (catalog_reader, catalog_cache) if name == CATALOG_VIEW else None
            view_reader, cache = found or reader(name, features)
            self.views.append(_ViewPlan(view_reader, features, cache))
        order = {name: j for j, name in enumerate(wanted)}
        plans: list[_ViewPlan | _PackedPlan] = [*self.views, *self.packed]
        plans.sort(key=lambda plan: order[plan.name])
        self.columns = [f for plan in plans for f in plan.features]

    def read_columns(
        self, user_id: str, item_ids: Sequence[str], as_of: datetime, degraded: bool = False
    ) -> dict[str, Any]:
        """``user_id``, ``item_id``, ``category`` (lists) then one column per feature (float64
        arrays, NaN where missing or expired; lists for string features), one row per item
        in the given order: what :meth:`read` returns, as a mapping of columns.

        ``degraded``: read nothing from the online store (see the module docstring)."""
        user, items = str(user_id), [str(i) for i in item_ids]
        catalog: dict[str, Any] = {}
        rows = self.catalog.rows([(i,) for i in items], degraded)
        found = self.catalog.fill(rows, as_of, catalog)
        categories = catalog["category"]
        entity = {
            "user_id": [user] * len(items),
            "item_id": items,
            "category": [c if c is not None else "" for c in categories],
        }
        columns: dict[str, Any] = {"user_id": entity["user_id"], "item_id": items}
        columns["category"] = categories
        for view in self.views:
            if view.reader is self.catalog.reader:
                view.fill(found, as_of, columns)
                continue
            keys = list(zip(*(entity[k] for k in view.reader.join_keys), strict=True))
            view.fill(view.rows(keys, degraded), as_of, columns)
        for plan in self.packed:
            plan.fill(user, items, as_of, columns, degraded)
        return {"user_id": columns["user_id"], "item_id": items, "category": categories} | {
            f: columns[f] for f in self.columns
        }

    def read(self, user_id: str, item_ids: Sequence[str], as_of: datetime) -> pd.DataFrame:
        """:meth:`read_columns` as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.read_columns(user_id, item_ids, as_of))
