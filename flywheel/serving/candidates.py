"""The default candidates of a request that names none: popular items, then new ones."""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from flywheel.schemas import WINDOWS
from flywheel.serving.api import ServingOptions

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)


def default_candidates(
    settings: Settings, at: datetime, n_popular: int = 40, n_new: int = 10
) -> list[str]:
    """The candidate set for requests that name none.

    The ``n_popular`` items with the most views in the 7 days before ``at`` (their latest
    ``item_activity`` snapshot at or before ``at``; ties: more carts, then lower id), then
    the newest catalog items created at or before ``at``, enough to make
    ``n_popular + n_new`` in all when the catalog allows. Reads the feature tables
    (``settings.feature_data_dir``); missing tables give fewer (or no) candidates.
    """
    import pyarrow.parquet as pq

    folder = settings.feature_data_dir
    chosen: list[str] = []
    activity = folder / "item_activity.parquet"
    if n_popular > 0 and activity.exists():
        frame = pq.read_table(
            activity,
            columns=["item_id", "event_timestamp", "item_views_7d", "item_carts_7d"],
            filters=[
                ("event_timestamp", "<=", at),
                ("event_timestamp", ">", at - timedelta(seconds=WINDOWS["7d"])),
            ],
        ).to_pandas()
        latest = frame.sort_values("event_timestamp").drop_duplicates("item_id", keep="last")
        ranked = latest.sort_values(
            ["item_views_7d", "item_carts_7d", "item_id"], ascending=[False, False, True]
        )
        chosen = [str(i) for i in ranked["item_id"].head(n_popular)]
    catalog = folder / "item_catalog.parquet"
    wanted = n_popular + n_new - len(chosen)
    if wanted > 0 and catalog.exists():
        items = pq.read_table(
            catalog, columns=["item_id", "event_timestamp"], filters=[("event_timestamp", "<=", at)]
        ).to_pandas()
        newest = items.sort_values(["event_timestamp", "item_id"], ascending=[False, True])
        taken = set(chosen)
        fresh = [str(i) for i in newest["item_id"].drop_duplicates() if str(i) not in taken]
        chosen += fresh[:wanted]
    return chosen


class CandidatePool:
    """The default candidate set, rebuilt when older than ``refresh_s``."""

    def __init__(self, settings: Settings, options: ServingOptions) -> None:
        self.settings, self.options = settings, options
        self._items: list[str] = []
        self._built_at = -math.inf

    def get(self, at: datetime) -> list[str]:
        if time.monotonic() - self._built_at >= self.options.candidates_refresh_s:
            self._items = default_candidates(
                self.settings, at, self.options.popular_candidates, self.options.new_candidates
            )
            self._built_at = time.monotonic()
            log.info("default candidates rebuilt: %d items", len(self._items))
        return self._items
