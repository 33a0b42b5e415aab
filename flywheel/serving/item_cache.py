"""Item-side feature views held in memory, refreshed when the online store changes.

An *item-side* view is one whose entity key holds no user (``item_catalog``,
``item_activity``, any view keyed by item id or by an item's category): its rows are the
same for every request, so a worker reads each key once through the online store's
``online_read`` and keeps the raw row (event time and values; the ttl is applied per
request, against the request's clock, exactly as a fresh read would be).

When a cached row is re-read (the staleness bound, per worker):

- a **materialization** (or ``apply``) is seen within ``check_s`` seconds: at most every
  ``check_s`` the registry is checked (a stat of a file registry, a refresh otherwise),
  and a view whose materialization record changed is dropped whole;
- **any other write** to an item-side row (another worker's or process's push, a writer
  that bypasses the registry) within ``max_age_s + check_s``: every cached view is
  dropped every ``max_age_s``;
- this worker's own **pushes** at once (:meth:`ItemSideViews.written`).

A dropped view is re-read lazily: the next request reads its candidates' keys in one
``online_read``, as every request did before. ``max_rows`` bounds a view's memory (it is
dropped when full). ``max_age_s = 0`` turns caching off. While the online store is down
the service does not refresh (nothing could be re-read): degraded rankings use what is held
(:meth:`CachedView.held`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from flywheel.serving.features import Row, ViewReader

log = logging.getLogger(__name__)

Key = tuple[Any, ...]


def is_item_side(view: FeatureView) -> bool:
    """Whether ``view``'s rows do not depend on the user (no ``user_id`` in its key)."""
    return "user_id" not in {c.name for c in view.entity_columns}


def materialization_signature(view: FeatureView) -> tuple[Any, ...]:
    """What changes in the registry when ``view`` is materialized or re-applied."""
    intervals = getattr(view, "materialization_intervals", None) or []
    return (
        view.most_recent_end_time,
        len(intervals),
        getattr(view, "last_updated_timestamp", None),
    )


class CachedView:
    """The rows of one item-side view read so far, by entity key (``None``: no row)."""

    def __init__(self, reader: ViewReader, signature: tuple[Any, ...], max_rows: int) -> None:
        self.reader, self.signature, self.max_rows = reader, signature, max_rows
        self._rows: dict[Key, Row | None] = {}
        self.reads = 0

    @property
    def name(self) -> str:
        return str(self.reader.view.name)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, keys: Sequence[Key]) -> list[Row | None]:
        """The raw row of every key, in order; keys not held yet are read in one batch."""
        rows = self._rows  # a concurrent clear() swaps the dict; this request keeps its own
        missing = [k for k in dict.fromkeys(keys) if k not in rows]
        if missing:
            fetched = self.reader.fetch(missing)
            self.reads += 1
            if len(rows) + len(missing) > self.max_rows:
                rows = self._rows = {}
            rows.update(zip(missing, fetched, strict=True))
        return [rows[k] for k in keys]

    def held(self, keys: Sequence[Key]) -> list[Row | None]:
        """The rows held for ``keys`` (``None`` where none is held); reads nothing (the
        online store is down: :mod:`~flywheel.serving.store_health`)."""
        rows = self._rows
        return [rows.get(k) for k in keys]

    def clear(self) -> None:
        self._rows = {}

    def forget(self, keys: Sequence[Key]) -> None:
        rows = self._rows
        for key in keys:
            rows.pop(key, None)


class ItemSideViews:
    """This worker's cached item-side views, shared by every feature service it serves."""

    def __init__(
        self,
        store: FeatureStore,
        check_s: float = 5.0,
        max_age_s: float = 60.0,
        max_rows: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.check_s, self.max_age_s, self.max_rows = (
            store,
            check_s,
            max_age_s,
            max_rows,
        )
        self.clock = clock
        self.views: dict[str, CachedView] = {}
        self.drops = 0
        self._checked_at = self._cleared_at = clock()
        self._registry_stat = self._stat_registry()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0

    def view(self, reader: ViewReader) -> CachedView:
        """The cache of ``reader``'s view (made on first use; one per view name)."""
        name = reader.view.name
        if name not in self.views:
            self.views[name] = CachedView(
                reader, materialization_signature(reader.view), self.max_rows
            )
        return self.views[name]

    def written(self, view_name: str, keys: Sequence[Key]) -> None:
        """This worker wrote these rows of ``view_name``: read them afresh next time."""
        cached = self.views.get(view_name)
        if cached is not None:
            cached.forget(keys)

    def maybe_refresh(self) -> None:
        """At most every ``check_s``: drop views that changed (or all, every ``max_age_s``).
        Never blocks: a thread that finds another checking goes on with the cache."""
        now = self.clock()
        if now - self._checked_at < self.check_s or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            if now - self._cleared_at >= self.max_age_s:
                self._cleared_at = now
                for cached in self.views.values():
                    cached.clear()
                self.drops += 1
            self._check_registry()
        except Exception:  # a registry being rewritten, a database hiccup: keep serving
            log.warning("item feature cache: registry check failed; retrying", exc_info=True)
        finally:
            self._lock.release()

    def _stat_registry(self) -> tuple[int, int, int] | None:
        """A local file registry's (inode, size, mtime); None for any other registry."""
        registry = self.store.config.registry
        path = getattr(registry, "path", None)
        if getattr(registry, "registry_type", "file") != "file" or not path or "://" in path:
            return None
        try:
            st = Path(path).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _check_registry(self) -> None:
        stat = self._stat_registry()
        if stat is not None and stat == self._registry_stat:
            return  # the file registry is unchanged: nothing was materialized or applied
        self.store.refresh_registry()
        self._registry_stat = stat
        for name, cached in list(self.views.items()):
            signature = materialization_signature(
                self.store.get_feature_view(name, allow_registry_cache=True)
            )
            if signature != cached.signature:
                log.info("item feature cache: %s changed in the registry; re-reading it", name)
                cached.clear()
                cached.signature = signature
