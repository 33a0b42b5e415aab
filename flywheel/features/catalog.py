"""Tables computed from the catalog alone, in the driver: item attributes, category prices."""

from __future__ import annotations

import heapq

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.features.windows import build_stamps
from flywheel.schemas import CATEGORY_PRICE_SCHEMA, ITEM_CATALOG_SCHEMA, TS_TYPE


def item_catalog_table(items: pa.Table, created_us: int) -> pa.Table:
    """``item_catalog`` rows: one per catalog item, stamped with its ``created_ts``."""
    items = items.sort_by([("item_id", "ascending"), ("created_ts", "ascending")])
    cols = {
        "item_id": items["item_id"],
        "event_timestamp": items["created_ts"].cast(TS_TYPE),
        "created_timestamp": build_stamps(items.num_rows, created_us),
        "category": items["category"].cast(pa.string()),
        "price": items["price"].cast(pa.float64()),
    }
    return pa.Table.from_pydict(cols, schema=ITEM_CATALOG_SCHEMA)


class _RunningMedian:
    """The median of a growing multiset: two heaps, O(log n) per value."""

    def __init__(self) -> None:
        self.low: list[float] = []  # max-heap (negated): the smaller half
        self.high: list[float] = []  # min-heap: the larger half

    def add(self, value: float) -> None:
        if self.low and value > -self.low[0]:
            heapq.heappush(self.high, value)
        else:
            heapq.heappush(self.low, -value)
        if len(self.low) > len(self.high) + 1:
            heapq.heappush(self.high, -heapq.heappop(self.low))
        elif len(self.high) > len(self.low):
            heapq.heappush(self.low, -heapq.heappop(self.high))

    def median(self) -> float:
        if len(self.low) > len(self.high):
            return -self.low[0]
        return (-self.low[0] + self.high[0]) / 2.0


def category_price_table(items: pa.Table, created_us: int) -> pa.Table:
    """``category_price`` rows: per category, the median price of the items created at or
    before each distinct ``created_ts`` of the category (one row per such time).

    The median grows item by item in creation order, so a row never uses an item created
    after it: an item listed later cannot move an earlier row. O(n log n) in the catalog.
    """
    if items.num_rows == 0:
        return CATEGORY_PRICE_SCHEMA.empty_table()
    cats = items["category"].cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    created = np.asarray(pc.cast(items["created_ts"], TS_TYPE).to_numpy()).view(np.int64)
    prices = np.asarray(items["price"].to_numpy(), dtype=np.float64)
    order = np.lexsort((prices, created, cats))
    out_cat: list[str] = []
    out_ts: list[int] = []
    out_median: list[float] = []
    medians: dict[str, _RunningMedian] = {}
    for k, i in enumerate(order):
        running = medians.setdefault(cats[i], _RunningMedian())
        running.add(float(prices[i]))
        nxt = order[k + 1] if k + 1 < len(order) else None
        if nxt is not None and cats[nxt] == cats[i] and created[nxt] == created[i]:
            continue  # the row of this time comes after its last item
        out_cat.append(str(cats[i]))
        out_ts.append(int(created[i]))
        out_median.append(running.median())
    cols = {
        "category": pa.array(out_cat, pa.string()),
        "event_timestamp": pa.array(out_ts, TS_TYPE),
        "created_timestamp": build_stamps(len(out_ts), created_us),
        "cat_median_price": pa.array(out_median, pa.float64()),
    }
    return pa.Table.from_pydict(cols, schema=CATEGORY_PRICE_SCHEMA)
