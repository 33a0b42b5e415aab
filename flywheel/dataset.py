"""Labelled impressions and point-in-time-correct training sets.

An *impression* is an item put in front of a user at a time. Until a model has served, the
impressions are organic: every ``view`` in the event lake, labelled positive when the same
user carts or buys the same item within the attribution window after it. Once serving runs,
served impressions from the prediction log joined with feedback are the main source
(see :func:`label_served_impressions`).

An impression is labelled only once its attribution window has closed, so a training set
built today never mistakes "not yet clicked" for "not clicked".

The mix (:func:`mix_impressions`): when the lake holds served impressions
(:mod:`flywheel.served`), they are first-class: up to ``served_weight * max_rows`` of them
(whole requests) are kept, and organic impressions fill the rest of ``max_rows`` (whole
sessions). Organic impressions stay because the served ones only cover what the policy
chose to show; the organic views cover items it never served. A ``source`` column
(``served`` / ``organic``) says where each row came from. With ``served_weight=0`` or no
served impressions the training set is the organic one, sampled exactly as before.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from flywheel.schemas import TS_TYPE

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

#: The lake's time resolution (``TS_TYPE``): ``ts < t + _US`` is ``ts <= t``.
_US: Final = timedelta(microseconds=1)

#: Organic positives: a cart or purchase of the viewed item by the viewer.
ORGANIC_POSITIVES: Final[tuple[str, ...]] = ("cart", "purchase")
#: Served positives: any feedback that the user engaged with what was served.
SERVED_POSITIVES: Final[tuple[str, ...]] = ("click", "cart", "purchase")

#: Columns of a labelled-impression frame (the entity rows of a training set).
IMPRESSION_COLUMNS: Final[tuple[str, ...]] = (
    "user_id",
    "item_id",
    "event_timestamp",
    "label",
    "group_id",
)


class DatasetError(ValueError):
    """The training window or its inputs cannot produce a training set."""


@dataclass(frozen=True)
class DatasetSummary:
    impressions: int
    positives: int
    positive_rate: float
    window_start: str
    window_end: str
    sampled_from: int
    seconds: float
    #: Rows of each source in the training set (see :func:`mix_impressions`).
    served_impressions: int = 0
    organic_impressions: int = 0


def label_organic_impressions(
    events: pd.DataFrame, attribution: timedelta, closed_before: datetime
) -> pd.DataFrame:
    """Label every view by whether the viewer carts/buys the item within ``attribution``.

    Args:
        events: lake events with ``user_id, item_id, event_type, ts, session_id``.
        attribution: how long after a view a cart/purchase still counts for it; the window
            is ``view.ts < positive.ts <= view.ts + attribution``.
        closed_before: only views whose window has closed by this time are labelled.

    Returns:
        Impressions with :data:`IMPRESSION_COLUMNS` (``group_id`` is the browsing session:
        strings, or a categorical when ``session_id`` is one), sorted by time.
    """
    views = events.loc[events["event_type"] == "view", ["user_id", "item_id", "ts", "session_id"]]
    views = views.loc[views["ts"] + attribution <= closed_before]
    positives = events.loc[
        events["event_type"].isin(ORGANIC_POSITIVES), ["user_id", "item_id", "ts"]
    ]
    labels = _first_positive_within(views, positives, attribution)
    out = _labelled_frame(views, labels)
    return out.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def _group_ids(sessions: pd.Series) -> Any:
    """Session ids as group ids; a categorical stays one (millions of strings cost GBs)."""
    if isinstance(sessions.dtype, pd.CategoricalDtype):
        return sessions.array
    return sessions.astype(str).to_numpy()


def _first_positive_within(
    impressions: pd.DataFrame, positives: pd.DataFrame, attribution: timedelta
) -> np.ndarray:
    """For each impression, whether a positive on the same (user, item) follows in time.

    Uses an as-of merge on the *next* positive after each impression: O(n log n), no
    per-row Python loop, and exact at the window's edges (strictly after, at most
    ``attribution`` later).
    """
    if impressions.empty:
        return np.zeros(0, dtype=bool)
    left = impressions[["user_id", "item_id", "ts"]].copy()
    left["_row"] = np.arange(len(left))
    # allow_exact_matches=False: a positive at the very same instant is not "after".
    right = positives.rename(columns={"ts": "pos_ts"}).sort_values("pos_ts")
    merged = pd.merge_asof(
        left.sort_values("ts"),
        right,
        left_on="ts",
        right_on="pos_ts",
        by=["user_id", "item_id"],
        direction="forward",
        allow_exact_matches=False,
    )
    hit = merged["pos_ts"].notna() & (merged["pos_ts"] - merged["ts"] <= attribution)
    labels = np.zeros(len(left), dtype=bool)
    labels[merged["_row"].to_numpy()] = hit.to_numpy()
    return labels


def label_served_impressions(
    predictions: pd.DataFrame,
    feedback: pd.DataFrame,
    attribution: timedelta,
    closed_before: datetime,
) -> pd.DataFrame:
    """Label served impressions (prediction log) by feedback about what was served.

    An impression ``(request_id, item_id)`` is positive when feedback on the same request
    and item with an event type in :data:`SERVED_POSITIVES` arrives within ``attribution``
    of the prediction (``ts_pred <= ts_feedback <= ts_pred + attribution``). The group is
    the request, so NDCG is measured per served ranking. Rows are sorted by time, stably:
    a request's rows (one timestamp) keep the prediction log's order, the order served.
    """
    served = predictions.loc[predictions["ts"] + attribution <= closed_before]
    fb = feedback.loc[
        feedback["event_type"].isin(SERVED_POSITIVES), ["request_id", "item_id", "ts"]
    ]
    merged = served.merge(
        fb.rename(columns={"ts": "fb_ts"}), on=["request_id", "item_id"], how="left"
    )
    in_window = (merged["fb_ts"] >= merged["ts"]) & (merged["fb_ts"] - merged["ts"] <= attribution)
    merged["hit"] = in_window.fillna(False)
    grouped = merged.groupby(["request_id", "item_id"], sort=False).agg(
        user_id=("user_id", "first"), ts=("ts", "first"), hit=("hit", "max")
    )
    grouped = grouped.reset_index()
    out = pd.DataFrame(
        {
            "user_id": grouped["user_id"].astype(str),
            "item_id": grouped["item_id"].astype(str),
            "event_timestamp": pd.to_datetime(grouped["ts"], utc=True),
            "label": grouped["hit"].astype(np.int8),
            "group_id": grouped["request_id"].astype(str),
        }
    )
    return out.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def sample_impressions(impressions: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Keep at most ``max_rows`` impressions, whole groups at a time, reproducibly."""
    if len(impressions) <= max_rows:
        return impressions
    # Integer codes, not the ids: isin/groupby over millions of strings is slow and big.
    codes, uniques = pd.factorize(impressions["group_id"], sort=False)
    keep = _sample_groups(codes, len(uniques), max_rows, seed)
    return impressions.loc[keep].reset_index(drop=True)


def _sample_groups(codes: np.ndarray, n_groups: int, max_rows: int, seed: int) -> np.ndarray:
    """Row mask keeping whole groups, in a seeded random order, up to ``max_rows`` rows.

    ``codes`` numbers the groups in order of first appearance (what ``pd.factorize`` and
    Arrow's ``dictionary_encode`` both give), so the same rows in the same order give the
    same sample whichever of the two computed the codes.
    """
    order = np.random.default_rng(seed).permutation(n_groups)
    sizes = np.bincount(codes, minlength=n_groups)[order]
    n_keep = max(1, int(np.searchsorted(np.cumsum(sizes), max_rows, side="right")))
    keep = np.zeros(n_groups, dtype=bool)
    keep[order[:n_keep]] = True
    return keep[codes]


def build_training_set(
    settings: Settings,
    impressions: pd.DataFrame,
    items: pd.DataFrame,
) -> pd.DataFrame:
    """Join impressions with point-in-time features from the shared feature service.

    Args:
        impressions: labelled impressions (:data:`IMPRESSION_COLUMNS`).
        items: the catalog (``item_id, category``): the user x category features are
            keyed on the category of the impressed item.

    Returns:
        The impressions with every raw feature of the feature service, as of each
        impression's own timestamp (never later).
    """
    from flywheel.feature_store import historical_features

    if impressions.empty:
        raise DatasetError("no labelled impressions in the training window: nothing to train on")
    entity = impressions.merge(items[["item_id", "category"]], on="item_id", how="left")
    unknown = int(entity["category"].isna().sum())
    if unknown:
        log.warning(
            "%d impressions of items missing from the catalog get category 'unknown'", unknown
        )
        entity["category"] = entity["category"].fillna("unknown")
    started = time.perf_counter()
    frame = historical_features(settings, entity)
    log.info("point-in-time join: %d rows in %.1fs", len(frame), time.perf_counter() - started)
    return frame


def lake_time_range(settings: Settings) -> tuple[datetime, datetime]:
    """The first and last event timestamps in the lake (reads only the edge partitions)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from flywheel.lake import lake_files

    files = lake_files(settings)
    if not files:
        raise DatasetError(
            f"the event lake at {str(settings.events_dir)!r} is empty: run `flywheel ingest`"
        )
    first_day = [f for f in files if f.parent == files[0].parent]
    last_day = [f for f in files if f.parent == files[-1].parent]
    lo = min(pc.min(pq.read_table(f, columns=["ts"]).column(0)).as_py() for f in first_day)
    hi = max(pc.max(pq.read_table(f, columns=["ts"]).column(0)).as_py() for f in last_day)
    return lo, hi


def read_views_and_positives(
    settings: Settings,
    start: datetime,
    end: datetime,
    closed_before: datetime,
    attribution: timedelta,
) -> tuple[pa.Table, pd.DataFrame]:
    """The window's labellable views (Arrow) and organic positives (pandas), file by file.

    Views are those with ``start <= ts < end`` whose attribution window closed by
    ``closed_before``: ``user_id, item_id, ts, session_id``, sorted by ``ts`` (stable, in lake
    order). Positives (``user_id, item_id, ts``) are the carts/purchases with ``start <= ts
    <= closed_before``: one at ``closed_before`` itself still counts for a view whose window
    closes then (``positive.ts <= view.ts + attribution``). They are a few percent of the
    events. Reading file by file with the type filter pushed into the Parquet scan keeps a
    10M-event window to the views' own Arrow columns (no pandas copy of every event, no
    per-row Python strings).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from flywheel.lake import lake_files

    lo, hi = pa.scalar(start, TS_TYPE), pa.scalar(end, TS_TYPE)
    last_view = pa.scalar(closed_before - attribution, TS_TYPE)
    last_positive = pa.scalar(closed_before, TS_TYPE)
    cols = ["user_id", "item_id", "event_type", "ts", "session_id"]
    views: list[pa.Table] = []
    positives: list[pa.Table] = []
    # Through closed_before: a positive at that instant may lie in the next day's partition.
    for path in lake_files(settings, start, max(end, closed_before + _US)):
        table = pq.read_table(
            path,
            columns=cols,
            filters=[("event_type", "in", ["view", *ORGANIC_POSITIVES])],
            # Dictionary-encoded as stored: a session's id once per file, not once per row.
            read_dictionary=["session_id"],
        )
        table = table.filter(pc.greater_equal(table["ts"], lo))
        is_view = pc.equal(table["event_type"], "view")
        keep = pc.and_(
            is_view, pc.and_(pc.less(table["ts"], hi), pc.less_equal(table["ts"], last_view))
        )
        views.append(table.filter(keep).select(["user_id", "item_id", "ts", "session_id"]))
        positive = pc.and_(pc.invert(is_view), pc.less_equal(table["ts"], last_positive))
        positives.append(table.filter(positive).select(["user_id", "item_id", "ts"]))
    if not views:
        empty = EMPTY_VIEWS
        return empty, empty.select(["user_id", "item_id", "ts"]).to_pandas()
    # One dictionary for all files, so a session crossing midnight keeps one code.
    view_table = pa.concat_tables(views).unify_dictionaries()
    view_table = view_table.take(pc.sort_indices(view_table["ts"]))  # stable
    return view_table, pa.concat_tables(positives).to_pandas()


#: An empty view table (the schema :func:`read_views_and_positives` returns).
EMPTY_VIEWS: Final = pa.table(
    {
        "user_id": pa.array([], pa.string()),
        "item_id": pa.array([], pa.string()),
        "ts": pa.array([], TS_TYPE),
        "session_id": pa.array([], pa.dictionary(pa.int32(), pa.string())),
    }
)


def organic_impressions(
    settings: Settings,
    start: datetime,
    end: datetime,
    attribution: timedelta,
    max_rows: int,
    seed: int,
) -> tuple[pd.DataFrame, int]:
    """Organic impressions of ``[start, end)``: sampled by whole sessions first, then labelled.

    The same rows as labelling every view (:func:`label_organic_impressions`) and then
    sampling (:func:`sample_impressions`): sampling never looks at labels, so it can come
    first, and only the kept views (at most ``max_rows``) are joined with the positives.
    This keeps the dataset stage of a 10M-event window under a gigabyte.

    Returns:
        the labelled, sampled impressions (:data:`IMPRESSION_COLUMNS`, sorted by time) and
        the number of labellable views they were sampled from.
    """
    import pyarrow.compute as pc

    views, positives = read_views_and_positives(settings, start, end, end, attribution)
    n_views = views.num_rows
    if max_rows <= 0 or n_views == 0:
        return _labelled_frame(views.slice(0, 0).to_pandas(), np.zeros(0, bool)), n_views
    if n_views > max_rows:
        sessions = views["session_id"].combine_chunks()
        if not pa.types.is_dictionary(sessions.type):
            sessions = pc.dictionary_encode(sessions)
        # Renumber sessions by first appearance in time order, as pd.factorize would.
        codes, uniques = pd.factorize(sessions.indices.to_numpy(zero_copy_only=False))
        keep = _sample_groups(codes, len(uniques), max_rows, seed)
        views = views.filter(pa.array(keep))
    frame = views.to_pandas()
    del views
    # Give the window's Arrow buffers back to the OS before the point-in-time join: the
    # allocator otherwise keeps them, and the stage's peak is this plus the join.
    pa.default_memory_pool().release_unused()
    labels = _first_positive_within(frame, positives, attribution)
    return _labelled_frame(frame, labels), n_views


def _labelled_frame(views: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Views (``user_id, item_id, ts, session_id``) and their labels as impressions."""
    return pd.DataFrame(
        {
            "user_id": views["user_id"].to_numpy(),
            "item_id": views["item_id"].to_numpy(),
            # .array, not .to_numpy(): a tz-aware column would become Timestamp objects.
            "event_timestamp": pd.to_datetime(views["ts"].array, utc=True),
            "label": labels.astype(np.int8),
            "group_id": _group_ids(views["session_id"]),
        }
    )


def mix_impressions(
    served: pd.DataFrame,
    organic: pd.DataFrame,
    max_rows: int,
    seed: int,
    served_weight: float = 1.0,
) -> pd.DataFrame:
    """Served impressions first, organic ones filling the rest of ``max_rows``.

    Args:
        served: labelled served impressions (:data:`IMPRESSION_COLUMNS`, group = request).
        organic: labelled organic impressions (group = session).
        max_rows: cap on the rows returned.
        served_weight: share of ``max_rows`` served impressions may take (0 to 1).

    Returns:
        :data:`IMPRESSION_COLUMNS` plus ``source`` (``served``/``organic``), sorted by time.
        Each part is sampled by whole groups, reproducibly by ``seed``.
    """
    kept = _served_share(served, max_rows, seed, served_weight)
    rest = max_rows - len(kept)
    organic = sample_impressions(organic, rest, seed) if rest > 0 else organic[:0]
    return _combine(kept, organic)


def _served_share(
    served: pd.DataFrame, max_rows: int, seed: int, served_weight: float
) -> pd.DataFrame:
    """The served impressions that fit in ``served_weight`` of ``max_rows``, whole groups."""
    if not 0.0 <= served_weight <= 1.0:
        raise ValueError(f"served_weight={served_weight!r}; expected a share between 0 and 1")
    budget = int(max_rows * served_weight)
    return sample_impressions(served, budget, seed) if budget and len(served) else served[:0]


def _combine(served: pd.DataFrame, organic: pd.DataFrame) -> pd.DataFrame:
    """Already-sampled served and organic impressions as one frame with ``source``, by time."""
    parts = [served.assign(source="served"), organic.assign(source="organic")]
    mixed = pd.concat([part for part in parts if len(part)] or parts[1:], ignore_index=True)
    mixed["group_id"] = mixed["group_id"].astype(str)
    return mixed.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def served_impressions(
    settings: Settings, start: datetime, end: datetime, attribution: timedelta
) -> pd.DataFrame:
    """Served impressions of ``[start, end)`` labelled by feedback (windows closed by ``end``).

    Feedback is read through ``end`` itself: a click at ``end`` counts for a request whose
    window closes then (``ts_feedback <= ts_pred + attribution <= end``), as an organic
    positive at ``end`` does (:func:`read_views_and_positives`).
    """
    from flywheel.served import read_served

    # The lake's times are microseconds: "< end + 1 us" is "<= end".
    predictions, feedback = read_served(settings, start, end, feedback_end=end + _US)
    if predictions.empty:
        return pd.DataFrame({c: [] for c in IMPRESSION_COLUMNS})
    return label_served_impressions(predictions, feedback, attribution, closed_before=end)


def build_dataset(
    settings: Settings,
    out_path: Path,
    *,
    window_days: float = 14.0,
    attribution: timedelta = timedelta(hours=1),
    max_rows: int = 1_000_000,
    seed: int = 0,
    end: datetime | None = None,
    served_weight: float = 1.0,
) -> DatasetSummary:
    """Labelled impressions of the training window + point-in-time features -> Parquet.

    Args:
        out_path: the training-set Parquet file to write (atomically).
        window_days: how far back from ``end`` impressions are taken.
        attribution: the attribution window of a positive.
        max_rows: cap on impressions (whole groups are sampled, reproducibly by ``seed``).
        end: end of the window (default: the lake's last event); only impressions whose
            attribution window closed by then are labelled.
        served_weight: share of ``max_rows`` that served impressions may take; organic
            impressions fill the rest (see :func:`mix_impressions`; 0 = organic only).

    Raises:
        DatasetError: empty lake, empty window, no catalog, or a window with one class only.
    """
    import pyarrow.parquet as pq

    from flywheel.lake import write_parquet_atomic

    started = time.perf_counter()
    if end is None:
        end = lake_time_range(settings)[1] + timedelta(microseconds=1)
    start = end - timedelta(days=window_days)
    if not settings.items_path.exists():
        raise DatasetError(
            f"item catalog {str(settings.items_path)!r} is missing: ingest one with "
            "`flywheel ingest --items FILE`"
        )
    served = served_impressions(settings, start, end, attribution)
    n_served = len(served)
    # mix_impressions' sampling, with the organic side sampled before it is labelled.
    served = _served_share(served, max_rows, seed, served_weight)
    organic, n_views = organic_impressions(
        settings, start, end, attribution, max_rows - len(served), seed
    )
    log.info(
        "dataset: %d served and %d organic impressions (sampled from %d views) in %s .. %s",
        len(served), len(organic), n_views, start, end,
    )  # fmt: skip
    total = n_served + n_views
    impressions = _combine(served, organic)
    del organic
    if impressions.empty:
        raise DatasetError(f"no labelled impressions between {start} and {end}")
    if impressions["label"].nunique() < 2:
        raise DatasetError(
            f"the window {start} .. {end} has only label={int(impressions['label'].iloc[0])}: "
            "a model needs positives and negatives"
        )
    items = pq.read_table(settings.items_path, columns=["item_id", "category"]).to_pandas()
    frame = build_training_set(settings, impressions, items)
    write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False), out_path)
    positives = int(frame["label"].sum())
    return DatasetSummary(
        impressions=len(frame),
        positives=positives,
        positive_rate=round(positives / len(frame), 4),
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        sampled_from=total,
        seconds=round(time.perf_counter() - started, 2),
        served_impressions=int((frame["source"] == "served").sum()),
        organic_impressions=int((frame["source"] == "organic").sum()),
    )
