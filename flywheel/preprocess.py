"""Preprocess a point-in-time training set into time-split model-input shards (Ray Data).

Output contract (read by train and evaluate)::

    D/train/*.parquet  D/valid/*.parquet  D/test/*.parquet  D/metadata.json

Each shard has the float32 model columns of the configured feature service
(:func:`flywheel.ranking.model_features`; ``metadata.json`` names the service and the
columns), an int8 ``label``, a string ``group_id``, ``user_id``, ``item_id`` and
``event_timestamp``.
Splits are by time (train earliest, test latest), cut at timestamp quantiles so each split
gets its share of rows; no test row is older than any train row.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from flywheel.feature_store import feature_service_name
from flywheel.ranking import model_features, model_inputs

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

SPLITS: Final[tuple[str, ...]] = ("train", "valid", "test")
KEEP_COLUMNS: Final[tuple[str, ...]] = (
    "label",
    "group_id",
    "user_id",
    "item_id",
    "event_timestamp",
)
#: Training sets up to this many rows are preprocessed in-process. The dataset stage caps
#: them at ``max_rows`` (1M by default); at 1M rows starting Ray and scheduling Ray Data
#: tasks took ~20 s of a 22 s stage, the work itself ~3 s in-process (cycle_bench.py).
LOCAL_MAX_ROWS: Final = 2_000_000


class PreprocessError(ValueError):
    """The training set cannot be turned into shards."""


@dataclass(frozen=True)
class PreprocessSummary:
    rows: dict[str, int]
    dropped: int
    positive_rate: dict[str, float]
    cut_points: list[str]
    seconds: float


def to_model_rows(batch: pd.DataFrame, service: str) -> pd.DataFrame:
    """One batch of the training set -> model-input rows (pure; Ray-free for tests).

    Rows without a label or an entity timestamp are dropped; feature gaps are filled by
    :func:`flywheel.ranking.model_inputs` for ``service`` (the feature service the training
    set was read through) exactly as serving fills them.
    """
    batch = batch.loc[batch["label"].notna() & batch["event_timestamp"].notna()]
    ts = pd.to_datetime(batch["event_timestamp"], utc=True)
    at_unix = ts.astype("int64").to_numpy() / 1e9 if len(batch) else np.zeros(0)
    x = model_inputs(batch, at_unix, service)
    out = pd.DataFrame(x, columns=list(model_features(service)), index=batch.index)
    out["label"] = batch["label"].astype(np.int8)
    out["group_id"] = batch["group_id"].astype(str)
    out["user_id"] = batch["user_id"].astype(str)
    out["item_id"] = batch["item_id"].astype(str)
    out["event_timestamp"] = ts
    return out.reset_index(drop=True)


def split_cut_points(timestamps: pd.Series, fractions: tuple[float, float, float]) -> list[Any]:
    """Timestamps at which train ends and valid ends, from row quantiles."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise PreprocessError(f"split fractions must be positive and sum to 1, got {fractions}")
    q = [fractions[0], fractions[0] + fractions[1]]
    return list(timestamps.quantile(q, interpolation="nearest"))


def preprocess(
    settings: Settings,
    training_set: Path,
    out_dir: Path,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    data_window: dict[str, str] | None = None,
    engine: Literal["auto", "ray", "local"] = "ray",
) -> PreprocessSummary:
    """Clean, encode and time-split a training set into shards (Ray Data or in-process).

    Args:
        training_set: a Parquet file or directory from the dataset stage.
        out_dir: the shards directory (replaced if it exists).
        fractions: train/valid/test shares of rows, in time order.
        engine: ``ray`` (Ray Data, the default: the same code runs on a Ray cluster),
            ``local`` (Arrow + pandas in this process; ~17 s faster on small sets, where
            starting Ray dominates) or ``auto`` (local up to :data:`LOCAL_MAX_ROWS` rows).
            The output is identical either way (tested).

    Raises:
        PreprocessError: empty input, a split that would be empty, bad fractions.
    """
    started = time.perf_counter()
    if not training_set.exists():
        raise FileNotFoundError(f"training set {str(training_set)!r} does not exist")
    ts = pq.read_table(training_set, columns=["event_timestamp"]).column(0).to_pandas()
    if len(ts) == 0:
        raise PreprocessError(f"training set {str(training_set)!r} has no rows")
    cuts = split_cut_points(ts, fractions)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    use_ray = engine == "ray" or (engine == "auto" and len(ts) > LOCAL_MAX_ROWS)
    log.info("preprocess: %d rows with %s", len(ts), "Ray Data" if use_ray else "Arrow in-process")
    write = _write_with_ray if use_ray else _write_in_process
    service = feature_service_name(settings)
    write(settings, training_set, cuts, tmp, service)
    rows: dict[str, int] = {}
    rates: dict[str, float] = {}
    for name in SPLITS:
        src = tmp / f"split={name}"
        if src.exists():
            src.rename(tmp / name)
        table = pq.read_table(tmp / name, columns=["label"]) if (tmp / name).exists() else None
        rows[name] = table.num_rows if table is not None else 0
        if table is None or rows[name] == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PreprocessError(
                f"split {name!r} is empty: the training window has too few distinct timestamps"
            )
        rates[name] = float(np.mean(table.column(0).to_numpy()))
        log.info("preprocess: %s split %d rows (positive rate %.3f)", name, rows[name], rates[name])
    meta = {
        "feature_service": service,
        "feature_columns": list(model_features(service)),
        "label": "label",
        "group": "group_id",
        "data_window": data_window or {"start": str(ts.min()), "end": str(ts.max())},
        "cut_points": [str(c) for c in cuts],
        "rows": rows,
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return PreprocessSummary(
        rows=rows,
        dropped=len(ts) - sum(rows.values()),
        positive_rate=rates,
        cut_points=[str(c) for c in cuts],
        seconds=round(time.perf_counter() - started, 2),
    )


def _write_with_ray(
    settings: Settings, training_set: Path, cuts: list[Any], tmp: Path, service: str
) -> None:
    """One Ray Data pass: encode, tag each row's split, write ``tmp/split=<name>/``."""
    import ray.data

    from flywheel.ray_runtime import ensure_ray

    ensure_ray(settings)
    ds = ray.data.read_parquet(str(training_set))
    ds.map_batches(
        _tag_split,  # type: ignore[arg-type]  # fn_args supplies the second parameter
        fn_args=(cuts, service),
        batch_format="pandas",
        batch_size=settings.ray.batch_size,
    ).write_parquet(str(tmp), partition_cols=["split"])


def _write_in_process(
    settings: Settings, training_set: Path, cuts: list[Any], tmp: Path, service: str
) -> None:
    """The same encoding and layout as :func:`_write_with_ray`, in this process, in batches."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    parts: dict[str, list[pa.Table]] = {name: [] for name in SPLITS}
    source = pads.dataset(str(training_set), format="parquet")
    for batch in source.to_batches(batch_size=settings.ray.batch_size):
        tagged = _tag_split(batch.to_pandas(), cuts, service)
        for name, part in tagged.groupby("split", sort=False):
            table = pa.Table.from_pandas(part.drop(columns="split"), preserve_index=False)
            parts[str(name)].append(table)
    for name, tables in parts.items():
        if tables:
            (tmp / f"split={name}").mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(tables), tmp / f"split={name}" / "part-00000.parquet")


def _tag_split(batch: pd.DataFrame, cuts: list[Any], service: str) -> pd.DataFrame:
    """Encode a batch and add its ``split`` column (``ts <= cut0``: train, ``<= cut1``: valid)."""
    out = to_model_rows(batch, service)
    edges = np.array([pd.Timestamp(c).tz_convert(None).to_datetime64() for c in cuts])
    times = out["event_timestamp"].dt.tz_convert(None).to_numpy()
    idx = np.searchsorted(edges.astype("datetime64[ns]"), times.astype("datetime64[ns]"))
    out["split"] = np.array(SPLITS, dtype=object)[idx]
    return out
