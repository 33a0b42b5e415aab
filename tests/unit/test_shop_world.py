"""The independent benchmark shop (benchmarks/shop_world.py), its metrics and verdicts.

The generator's claims are checked on a small shop built here: same seed, same bytes; its
export goes through its mapping (benchmarks/shop_world.yaml) with nothing quarantined; the
oracle is a probability per detail view, calibrated to the project's own organic labels;
and browsing is not driven by taste while baskets are. No Ray, no Feast.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks import shop_quality
from benchmarks.harness import judge
from benchmarks.quality_metrics import calibration_gap, expected_auc, graded_ndcg_at_k, lift_share
from benchmarks.shop_world import CATEGORIES, Shop, generate, make_shop
from flywheel.dataset import label_organic_impressions
from flywheel.ingest import CheckContext, load_mapping, validate_mapped
from flywheel.ingest.readers import read_raw

MAPPING = Path(__file__).resolve().parents[2] / "benchmarks" / "shop_world.yaml"
CTX = CheckContext(now=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def shop() -> Shop:
    return make_shop(users=800, items=150, days=9, seed=3)


@pytest.fixture(scope="module")
def out(shop: Shop, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shop")
    generate(shop, folder)
    return folder


@pytest.fixture(scope="module")
def events(out: Path) -> pd.DataFrame:
    frames = [pd.read_csv(f, dtype=str) for f in sorted((out / "events").glob("day-*.csv"))]
    frame = pd.concat(frames, ignore_index=True)
    frame["timestamp_ms"] = frame["timestamp_ms"].astype(np.int64)
    return frame


def _files(folder: Path) -> dict[str, bytes]:
    paths = [*sorted((folder / "events").glob("*.csv")), folder / "truth" / "views.parquet"]
    return {p.name: p.read_bytes() for p in paths}


def test_same_seed_same_bytes_other_seed_other_events(out: Path, tmp_path: Path) -> None:
    generate(make_shop(users=800, items=150, days=9, seed=3), tmp_path / "again")
    generate(make_shop(users=800, items=150, days=9, seed=4), tmp_path / "other")
    assert _files(tmp_path / "again") == _files(out)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(out).keys() and other != _files(out)


def test_export_has_its_own_layout_one_file_per_utc_day(out: Path, events: pd.DataFrame) -> None:
    files = sorted(p.name for p in (out / "events").glob("*.csv"))
    assert files == [f"day-2025-03-{d:02d}.csv" for d in range(3, 12)]
    assert list(events.columns) == [
        "timestamp_ms", "visitor", "action", "product", "category_path", "unit_price",
    ]  # fmt: skip
    assert set(events["action"]) == {"detail", "add_to_basket", "order", "remove_from_basket"}
    assert events["visitor"].str.fullmatch(r"usr-[0-9a-f]{10}").all()
    assert events["product"].str.fullmatch(r"SKU-\d+-[A-Z]{2}\d").all()
    day_ms = 86_400_000
    first = int(datetime(2025, 3, 3, tzinfo=UTC).timestamp() * 1000)
    assert events["timestamp_ms"].min() >= first
    assert events["timestamp_ms"].max() < first + 9 * day_ms


def test_the_mapping_ingests_every_row_with_nothing_quarantined(out: Path) -> None:
    mapping = load_mapping(MAPPING)
    kept = dropped = 0
    types: set[str] = set()
    for path in sorted((out / "events").glob("*.csv")):
        for batch in read_raw(path):
            assert batch.rejects == []
            mapped = validate_mapped(batch.table, mapping, CTX, str(path))
            assert mapped.validation.quarantine.num_rows == 0, mapped.validation.reasons
            assert mapped.items_quarantine.num_rows == 0, mapped.items_reasons
            valid = mapped.validation.valid
            kept += valid.num_rows
            dropped += sum(mapped.dropped_types.values())
            types |= set(valid.column("event_type").to_pylist())
            assert set(mapped.dropped_types) <= {"remove_from_basket"}
            assert mapped.items is not None and mapped.items.num_rows == valid.num_rows
    assert types == {"view", "cart", "purchase"}
    assert kept > 10_000 and dropped > 0


def test_oracle_is_one_probability_per_detail_view(out: Path, events: pd.DataFrame) -> None:
    truth = pd.read_parquet(out / "truth" / "views.parquet")
    details = events.loc[events["action"] == "detail"]
    assert len(truth) == len(details)
    assert (truth["timestamp_ms"].to_numpy() == details["timestamp_ms"].to_numpy()).all()
    p = truth["p_positive"].to_numpy()
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert p.std() > 0.02  # a constant oracle would say nothing


def _labelled(events: pd.DataFrame) -> pd.DataFrame:
    """The export as lake-like events, labelled by the project's organic label function."""
    kinds = {"detail": "view", "add_to_basket": "cart", "order": "purchase"}
    e = events.loc[events["action"].isin(kinds)]
    lake = pd.DataFrame({
        "user_id": e["visitor"], "item_id": e["product"], "event_type": e["action"].map(kinds),
        "ts": pd.to_datetime(e["timestamp_ms"], unit="ms", utc=True), "session_id": e["visitor"],
    })  # fmt: skip
    end = lake["ts"].max() + timedelta(microseconds=1)
    return label_organic_impressions(lake, timedelta(hours=1), closed_before=end)


def test_oracle_is_the_probability_of_the_projects_label(out: Path, events: pd.DataFrame) -> None:
    imp = _labelled(events)
    truth = pd.read_parquet(out / "truth" / "views.parquet")
    truth["event_timestamp"] = pd.to_datetime(truth["timestamp_ms"], unit="ms", utc=True)
    joined = imp.merge(
        truth.rename(columns={"visitor": "user_id", "product": "item_id"}),
        on=["user_id", "item_id", "event_timestamp"], how="left",
    )  # fmt: skip
    assert joined["p_positive"].notna().all()
    gap, se = calibration_gap(joined["p_positive"].to_numpy(), joined["label"].to_numpy())
    assert abs(gap) <= 4 * se, (gap, se)
    # ... and it ranks the labels far better than chance.
    assert roc_auc_score(joined["label"], joined["p_positive"]) > 0.75


def _primary_share(shop: Shop, users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> float:
    return float(np.mean(shop.item_category[items] == shop.primary_at(users, ts)))


def test_browsing_ignores_taste_and_baskets_reveal_it(
    shop: Shop, out: Path, events: pd.DataFrame
) -> None:
    users = {u: k for k, u in enumerate(shop.user_ids)}
    items = {i: k for k, i in enumerate(shop.item_ids)}
    truth = pd.read_parquet(out / "truth" / "views.parquet")
    fresh = truth.loc[~truth["in_basket"]]  # discovery views, not basket items seen again
    u = fresh["visitor"].map(users).to_numpy()
    i = fresh["product"].map(items).to_numpy()
    ts = fresh["timestamp_ms"].to_numpy()
    seen = _primary_share(shop, u, i, ts)
    # The null: the same views with the viewers shuffled (taste and views independent).
    rng = np.random.default_rng(0)
    null = np.mean([_primary_share(shop, rng.permutation(u), i, ts) for _ in range(20)])
    se = math.sqrt(null * (1 - null) / len(u))
    assert abs(seen - null) <= 4 * se, (seen, null, se)
    carts = events.loc[events["action"] == "add_to_basket"]
    cu = carts["visitor"].map(users).to_numpy()
    ci = carts["product"].map(items).to_numpy()
    carted = _primary_share(shop, cu, ci, carts["timestamp_ms"].to_numpy())
    assert carted > null + 0.15, (carted, null)


def test_drift_moves_primary_categories_of_some_visitors_only(shop: Shop) -> None:
    assert shop.drift_day == 6
    moved = shop.new_primary != shop.primary
    assert 0.3 < moved.mean() < 0.5
    assert not np.any(shop.new_primary == shop.secondary)
    users = np.arange(shop.users)
    before = np.full(shop.users, shop.start_ms + 6 * 86_400_000 - 1)
    assert (shop.primary_at(users, before) == shop.primary).all()
    assert (shop.primary_at(users, before + 1) == shop.new_primary).all()
    assert len(CATEGORIES) == int(shop.item_category.max()) + 1


def test_bad_sizes_name_the_argument() -> None:
    with pytest.raises(ValueError, match="items=5"):
        make_shop(users=10, items=5, days=4)
    with pytest.raises(ValueError, match="drift_day=9"):
        make_shop(users=10, items=20, days=4, drift_day=9)


# ---- quality metrics ------------------------------------------------------------------------


def test_expected_auc_with_hard_labels_is_the_auc_ties_included() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    labels = (rng.random(300) < 0.3).astype(float)
    assert expected_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_expected_auc_is_highest_for_the_oracle_and_half_for_a_constant() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(0.5, 5.0, 2000)
    best = expected_auc(p, p)
    assert expected_auc(np.zeros_like(p), p) == pytest.approx(0.5)
    for _ in range(5):
        assert expected_auc(p + rng.normal(0, 0.05, p.size), p) < best
    # Self-pairs are left out: two impressions, one surely positive, are ordered perfectly.
    assert expected_auc(np.array([1.0, 0.0]), np.array([0.9, 0.1])) == pytest.approx(
        0.81 / (0.81 + 0.01)
    )
    with pytest.raises(ValueError, match="probabilities"):
        expected_auc(np.zeros(2), np.array([0.5, 1.5]))


def test_graded_ndcg_is_one_for_the_ideal_order_and_lower_otherwise() -> None:
    p = np.array([0.9, 0.1, 0.5, 0.0, 0.3, 0.2])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    assert graded_ndcg_at_k(p, p, groups) == pytest.approx(1.0)
    worst = graded_ndcg_at_k(-p, p, groups)
    assert worst < 1.0
    # group a reversed: gains 0.1, 0.5, 0.9 against the ideal 0.9, 0.5, 0.1
    disc = 1 / np.log2(np.arange(3) + 2)
    ideal_a, got_a = np.array([0.9, 0.5, 0.1]) @ disc, np.array([0.1, 0.5, 0.9]) @ disc
    ideal_b, got_b = np.array([0.3, 0.2, 0.0]) @ disc, np.array([0.0, 0.2, 0.3]) @ disc
    assert worst == pytest.approx((got_a / ideal_a + got_b / ideal_b) / 2)
    # ties are pessimistic: a constant scorer is ranked lowest gain first
    assert graded_ndcg_at_k(np.zeros(6), p, groups) == pytest.approx(worst)


def test_lift_share() -> None:
    assert lift_share(0.65, 0.80) == pytest.approx(0.5)
    assert math.isnan(lift_share(0.6, 0.5))


# ---- the benchmark's verdicts (benchmarks/shop_quality.py), on figures built here ---------


def _result(world: str = "shop", loop: dict[str, object] | None = None) -> dict[str, object]:
    base = {
        "quarantine_files": [], "trained_until": "2025-03-10T23:59:51+00:00",
        "window_end": "2025-03-10T23:59:51.000001+00:00", "champion": "ranker:1",
        "blessed": True,
    }  # fmt: skip
    return {
        "world": world,
        "test_start": "2025-03-11T00:00:00+00:00",
        "loop": base | (loop or {}),
        "test": {
            "impressions": 10,
            "features_rows": 10,
            "oracle_missing": 0,
            "oracle_in_range": True,
            "calibration": (0.001, 0.002),
        },
        "figures": {
            "model": {"expected_auc": 0.70, "lift_share": 0.6},
            "popularity": {"expected_auc": 0.66},
        },
    }


def test_quality_verdicts_targets_in_their_direction() -> None:
    r = _result()
    verdicts = judge(shop_quality.targets_of(r), shop_quality.checks_of(r))
    assert verdicts.exit_code == 0
    assert list(verdicts.targets.values()) == ["met", "missed"]  # +0.04 >= 0.03; 0.6 < 0.75
    sim = shop_quality.targets_of(_result("simulator"))
    assert [(t.threshold, t.measured) for t in sim] == [(0.85, 0.6)]


@pytest.mark.parametrize(
    ("loop", "failed"),
    [
        ({"trained_until": "2025-03-11T00:00:00+00:00"}, "training lake ends before"),
        ({"window_end": "2025-03-11T00:30:00+00:00"}, "training window ends before"),
        ({"window_end": None}, "training window ends before"),
        ({"champion": None}, "deployed a champion"),
        ({"quarantine_files": ["run-1.parquet"]}, "quarantined nothing"),
    ],
)
def test_a_leak_or_a_broken_loop_fails_the_run(loop: dict[str, object], failed: str) -> None:
    r = _result(loop=loop)
    verdicts = judge(shop_quality.targets_of(r), shop_quality.checks_of(r))
    assert verdicts.exit_code == 1
    assert any(failed in name for name in verdicts.failed_checks), verdicts.failed_checks


def test_an_uncalibrated_oracle_or_missing_features_fail_the_run() -> None:
    r = _result()
    r["test"] = {**r["test"], "calibration": (0.02, 0.002)}  # type: ignore[dict-item]
    assert judge([], shop_quality.checks_of(r)).failed_checks == [
        "shop: oracle calibrated to the labels (within 4 SE)"
    ]
    r = _result()
    r["test"] = {**r["test"], "features_rows": 9}  # type: ignore[dict-item]
    assert len(judge([], shop_quality.checks_of(r)).failed_checks) == 1
