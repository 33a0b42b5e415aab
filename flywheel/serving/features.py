"""Online feature reading: a feature service's values for one user and many items."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, FeatureView

#: The view holding each item's category, the join key of the user x category views.
CATALOG_VIEW: Final = "item_catalog"

_PROTO_FIELD = {"INT64": "int64_val", "INT32": "int32_val", "STRING": "string_val"}


def _proto_value(proto: Any) -> Any:
    kind = proto.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(proto, kind)


class ViewReader:
    """Reads some features of one feature view from the online store by entity key."""

    def __init__(self, store: FeatureStore, view: FeatureView, features: Sequence[str]) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self.view, self.features = view, tuple(features)
        self.config = store.config
        self.online = get_online_store_from_config(store.config.online_store)
        self.join_keys = tuple(c.name for c in view.entity_columns)
        self.key_fields = tuple(
            _PROTO_FIELD[c.dtype.to_value_type().name] for c in view.entity_columns
        )
        ttl = view.ttl.total_seconds() if view.ttl else 0.0
        self.ttl_s = ttl if ttl > 0 else None

    def read(
        self, keys: Sequence[tuple[Any, ...]], as_of: datetime
    ) -> list[tuple[datetime, dict[str, Any]] | None]:
        """Per key (values in ``join_keys`` order): ``(event time, {feature: value})``, or
        ``None`` when the store has no row or the row is older than the view's ttl."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        protos = [
            EntityKey(
                join_keys=list(self.join_keys),
                entity_values=[Value(**{f: v}) for f, v in zip(self.key_fields, key, strict=True)],
            )
            for key in keys
        ]
        rows = self.online.online_read(self.config, self.view, protos, list(self.features))
        oldest = as_of.timestamp() - self.ttl_s if self.ttl_s else -math.inf
        out: list[tuple[datetime, dict[str, Any]] | None] = []
        for ts, values in rows:
            if ts is None or values is None or ts.timestamp() < oldest:
                out.append(None)
            else:
                out.append((ts, {f: _proto_value(values[f]) for f in self.features if f in values}))
        return out


class OnlineFeatureReader:
    """One user's features against many items through a feature service, fast.

    Answers what ``feature_store.online_features`` answers (same columns, same nulls for
    missing or expired values) with the service resolved once and one ``online_read`` per
    view over the distinct entity keys of the request.
    """

    def __init__(self, store: FeatureStore, service_name: str) -> None:
        service = store.get_feature_service(service_name)
        self.service_name = service_name
        wanted = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
        # The catalog is read anyway for the category join key: one read serves both.
        catalog = ["category", *(f for f in wanted.get(CATALOG_VIEW, []) if f != "category")]
        self.catalog = ViewReader(store, store.get_feature_view(CATALOG_VIEW), catalog)
        self.views = [
            (
                self.catalog
                if name == CATALOG_VIEW
                else ViewReader(store, store.get_feature_view(name), features),
                tuple(features),
            )
            for name, features in wanted.items()
        ]
        self.columns = [f for _, features in self.views for f in features]

    def read(self, user_id: str, item_ids: Sequence[str], as_of: datetime) -> pd.DataFrame:
        """``user_id``, ``item_id``, ``category`` then one float column per feature (NaN
        where missing or expired), one row per item in the given order."""
        import pandas as pd

        items = [str(i) for i in item_ids]
        found = self.catalog.read([(i,) for i in items], as_of)
        categories = [row[1].get("category") if row else None for row in found]
        entity = {
            "user_id": [str(user_id)] * len(items),
            "item_id": items,
            "category": [c if c is not None else "" for c in categories],
        }
        columns: dict[str, Any] = {"user_id": entity["user_id"], "item_id": items}
        columns["category"] = categories
        for view, features in self.views:
            if view is self.catalog:
                rows = found
            else:
                keys = list(zip(*(entity[k] for k in view.join_keys), strict=True))
                distinct = list(dict.fromkeys(keys))
                answers = dict(zip(distinct, view.read(distinct, as_of), strict=True))
                rows = [answers[key] for key in keys]
            for name in features:
                columns[name] = np.array([_as_float(row, name) for row in rows], dtype=np.float64)
        return pd.DataFrame(columns)


def _as_float(answer: tuple[datetime, dict[str, Any]] | None, name: str) -> float:
    value = answer[1].get(name) if answer is not None else None
    return math.nan if value is None else float(value)
