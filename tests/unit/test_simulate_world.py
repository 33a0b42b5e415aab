"""The simulated world: construction, persistence and the documented ground truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from flywheel.simulate.world import (
    PREMIUM_TREND,
    PRICE_SHOCK,
    DriftWeights,
    World,
    WorldError,
    make_world,
    to_unix_us,
)

START = datetime(2025, 3, 3, tzinfo=UTC)
ARRAYS = ("taste", "new_taste", "drifted", "price_sensitivity", "activity", "item_category",
          "item_price", "item_quality", "item_popularity", "item_created_us")  # fmt: skip


def reference_click_prob(
    world: World,
    users: np.ndarray,
    items: np.ndarray,
    taste: np.ndarray,
    weights: tuple[float, float, float] = (1.0, 0.6, 0.8),
):
    """The click model as written in the world module's docstring, given a taste matrix and
    the (affinity, quality, price x sensitivity) weights in force."""
    t = taste[users, world.item_category[items]]
    log_price = np.log(world.item_price)
    z = (np.log(world.item_price[items]) - log_price.mean()) / log_price.std()
    logit = (
        -3.0
        + weights[0] * np.log(world.n_categories * t + 0.1)
        + weights[1] * world.item_quality[items]
        - weights[2] * world.price_sensitivity[users] * z
    )
    return 1 / (1 + np.exp(-logit))


def all_pairs(world: World) -> tuple[np.ndarray, np.ndarray]:
    users, items = np.meshgrid(np.arange(world.n_users), np.arange(world.n_items), indexing="ij")
    return users.ravel(), items.ravel()


def test_same_seed_same_world_different_seed_different_world() -> None:
    a, b = make_world(50, 40, seed=7, start=START), make_world(50, 40, seed=7, start=START)
    c = make_world(50, 40, seed=8, start=START)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.taste, c.taste)
    assert not np.allclose(a.item_price, c.item_price)


def test_world_shapes_and_ranges() -> None:
    w = make_world(60, 30, n_categories=5, seed=1, start=START)
    assert w.taste.shape == (60, 5)
    np.testing.assert_allclose(w.taste.sum(axis=1), 1.0)
    assert set(np.unique(w.item_category)) == set(range(5))  # no category left empty
    assert (w.item_price > 0).all()
    assert (w.item_created_us < to_unix_us(START)).all()
    assert len(set(w.category_names)) == 5
    with pytest.raises(ValueError):
        w.taste[0, 0] = 1.0  # read-only: the world is immutable


def test_save_and_load_round_trip(tmp_path) -> None:
    w = make_world(30, 20, seed=4, start=START, drift_day=2.5, drift_share=0.4)
    w.save(tmp_path / "w")
    loaded = World.load(tmp_path / "w")
    assert loaded.params() == w.params()
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(w, name))
    # Without the arrays the world is rebuilt from its parameters and seed.
    for npy in (tmp_path / "w").glob("*.npy"):
        npy.unlink()
    rebuilt = World.load(tmp_path / "w")
    np.testing.assert_array_equal(rebuilt.new_taste, w.new_taste)


def test_load_rejects_missing_folder(tmp_path) -> None:
    with pytest.raises(WorldError, match=r"world\.json"):
        World.load(tmp_path / "nowhere")


def test_click_prob_matches_the_documented_model() -> None:
    w = make_world(40, 25, seed=2, start=START)
    users, items = all_pairs(w)
    got = w.click_prob(users, items, START)
    np.testing.assert_allclose(got, reference_click_prob(w, users, items, w.taste), rtol=1e-9)
    expected_buy = got * w.cart_given_view(users, items, START)
    expected_buy *= w.purchase_given_cart(users, items, START)
    np.testing.assert_allclose(w.purchase_prob(users, items, START), expected_buy)


def test_ground_truth_moves_with_taste_quality_and_price() -> None:
    w = make_world(200, 400, seed=5, start=START)
    users, items = all_pairs(w)
    p = w.click_prob(users, items, START)
    logit = np.log(p / (1 - p))
    taste = w.taste[users, w.item_category[items]]
    assert np.corrcoef(np.log(taste + 0.01), logit)[0, 1] > 0.5
    # Within one user, pricier items of equal taste and quality would be clicked less.
    sensitive = int(np.argmax(w.price_sensitivity))
    mine = users == sensitive
    residual = logit[mine] - np.log(12 * taste[mine] + 0.1) - 0.6 * w.item_quality[items[mine]]
    assert np.corrcoef(residual, np.log(w.item_price[items[mine]]))[0, 1] < -0.99


def test_drift_switches_the_documented_share_of_users_at_drift_day() -> None:
    w = make_world(100, 30, seed=9, start=START, drift_day=3.0, drift_share=0.3)
    assert w.drifted.sum() == 30
    before, after = START + timedelta(days=2.99), START + timedelta(days=3.0)
    users, items = all_pairs(w)
    np.testing.assert_allclose(
        w.click_prob(users, items, before), reference_click_prob(w, users, items, w.taste)
    )
    new_taste = np.where(w.drifted[:, None], w.new_taste, w.taste)
    np.testing.assert_allclose(
        w.click_prob(users, items, after), reference_click_prob(w, users, items, new_taste)
    )
    changed = ~np.isclose(w.click_prob(users, items, before), w.click_prob(users, items, after))
    assert set(np.unique(users[changed])) == set(np.flatnonzero(w.drifted))
    # The new tastes are genuinely different ones, not a copy.
    assert np.abs(w.new_taste[w.drifted] - w.taste[w.drifted]).sum(axis=1).min() > 0.1


def test_per_row_times_straddling_the_drift() -> None:
    w = make_world(20, 15, seed=3, start=START, drift_day=1.0, drift_share=1.0)
    at = [START, START + timedelta(days=2)]
    p = w.click_prob([4, 4], [7, 7], at)
    np.testing.assert_allclose(p[0], w.click_prob(4, 7, START))
    np.testing.assert_allclose(p[1], w.click_prob(4, 7, START + timedelta(days=5)))
    np.testing.assert_allclose(w.taste_at([4, 4], at)[1], w.new_taste[4])


def test_without_drift_the_ground_truth_never_changes() -> None:
    w = make_world(50, 20, seed=6, start=START)
    users, items = all_pairs(w)
    later = START + timedelta(days=365)
    np.testing.assert_array_equal(
        w.click_prob(users, items, START), w.click_prob(users, items, later)
    )
    assert not w.drifted.any()


def test_price_shock_is_the_documented_concept_drift() -> None:
    # Docstring: after the drift the click logit is -3.0 + 1.0 aff + 0.3 q - 2.4 s z.
    w = make_world(60, 40, seed=11, start=START, drift_day=2.0, drift_weights=PRICE_SHOCK)
    users, items = all_pairs(w)
    before, after = START + timedelta(days=1.99), START + timedelta(days=2.0)
    np.testing.assert_allclose(
        w.click_prob(users, items, before), reference_click_prob(w, users, items, w.taste)
    )
    new_taste = np.where(w.drifted[:, None], w.new_taste, w.taste)
    np.testing.assert_allclose(
        w.click_prob(users, items, after),
        reference_click_prob(w, users, items, new_taste, (1.0, 0.3, 2.4)),
    )
    # The weights change for everyone, drifted tastes or not.
    kept = ~w.drifted[users]
    assert not np.allclose(
        w.click_prob(users[kept], items[kept], before),
        w.click_prob(users[kept], items[kept], after),
    )


def test_premium_trend_makes_price_attract_instead_of_deter() -> None:
    w = make_world(200, 400, seed=5, start=START, drift_day=1.0, drift_weights=PREMIUM_TREND)
    sensitive = int(np.argmax(w.price_sensitivity))
    items = np.arange(w.n_items)
    after = START + timedelta(days=1)
    for at, sign in ((START, -1.0), (after, 1.0)):
        p = w.click_prob(sensitive, items, at)
        taste = w.taste_at([sensitive], at)[0, w.item_category]
        # Remove the affinity and quality terms: what is left moves with the log price.
        residual = np.log(p / (1 - p)) - np.log(12 * taste + 0.1) - 0.6 * w.item_quality
        assert sign * np.corrcoef(residual, np.log(w.item_price))[0, 1] > 0.99


def test_cart_and_purchase_logits_share_the_weight_multipliers() -> None:
    dw = DriftWeights(affinity=0.5, quality=2.0, price=-1.0)
    shifted = make_world(30, 25, seed=4, start=START, drift_day=0.0, drift_weights=dw)
    users, items = all_pairs(shifted)
    t = shifted.taste[users, shifted.item_category[items]]
    aff, q = np.log(12 * t + 0.1), shifted.item_quality[items]
    sz = shifted.price_sensitivity[users] * shifted.price_z[items]
    want_cart = 1 / (1 + np.exp(-(-3.3 + 0.25 * aff + 0.8 * q + 0.6 * sz)))
    want_buy = 1 / (1 + np.exp(-(-1.1 + 0.6 * q + 0.5 * sz)))
    at = START + timedelta(days=1)
    new_taste = shifted.taste_at(users, at)
    np.testing.assert_allclose(
        new_taste,
        np.where(shifted.drifted[users, None], shifted.new_taste[users], shifted.taste[users]),
    )
    same_taste = ~shifted.drifted[users]
    np.testing.assert_allclose(
        shifted.cart_given_view(users, items, at)[same_taste], want_cart[same_taste]
    )
    np.testing.assert_allclose(shifted.purchase_given_cart(users, items, at), want_buy)


def test_neutral_or_driftless_weights_leave_the_world_unchanged() -> None:
    plain = make_world(40, 30, seed=8, start=START, drift_day=1.0)
    neutral = make_world(40, 30, seed=8, start=START, drift_day=1.0, drift_weights=DriftWeights())
    users, items = all_pairs(plain)
    later = START + timedelta(days=3)
    np.testing.assert_allclose(
        neutral.click_prob(users, items, later), plain.click_prob(users, items, later)
    )
    # Without a drift day there is no drift of any kind: weights are dropped.
    no_drift = make_world(40, 30, seed=8, start=START, drift_weights=PRICE_SHOCK)
    assert no_drift.drift_weights is None
    assert no_drift.params() == make_world(40, 30, seed=8, start=START).params()
    np.testing.assert_array_equal(
        no_drift.click_prob(users, items, later), no_drift.click_prob(users, items, START)
    )


def test_drift_weights_survive_save_and_load(tmp_path) -> None:
    w = make_world(30, 20, seed=4, start=START, drift_day=1.5, drift_weights=PRICE_SHOCK)
    loaded = World.load(w.save(tmp_path / "w"))
    assert loaded.drift_weights == PRICE_SHOCK
    assert loaded.params()["drift_weights"] == {"affinity": 1.0, "quality": 0.5, "price": 3.0}
    users, items = all_pairs(w)
    at = START + timedelta(days=2)
    np.testing.assert_array_equal(
        loaded.click_prob(users, items, at), w.click_prob(users, items, at)
    )
    for npy in (tmp_path / "w").glob("*.npy"):
        npy.unlink()
    assert World.load(tmp_path / "w").drift_weights == PRICE_SHOCK


def test_worlds_saved_before_concept_drift_still_load(tmp_path) -> None:
    w = make_world(20, 15, seed=2, start=START, drift_day=1.0)
    w.save(tmp_path / "w")
    meta = tmp_path / "w" / "world.json"
    params = json.loads(meta.read_text())
    del params["drift_weights"]
    meta.write_text(json.dumps(params))
    loaded = World.load(tmp_path / "w")
    assert loaded.drift_weights is None
    np.testing.assert_array_equal(loaded.new_taste, w.new_taste)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_items": 5, "n_categories": 12}, "n_items"),
        ({"start": datetime(2025, 1, 1)}, "start"),
        ({"drift_day": -1.0}, "drift_day"),
        ({"drift_share": 1.5}, "drift_share"),
        ({"drift_day": 1.0, "drift_weights": DriftWeights(price=float("nan"))}, "drift_weights"),
    ],
)
def test_invalid_parameters_are_named(kwargs, field) -> None:
    args = {"n_users": 10, "n_items": 20, "start": START, **kwargs}
    with pytest.raises(WorldError, match=field):
        make_world(**args)


def test_naive_times_and_unknown_ids_are_rejected() -> None:
    w = make_world(10, 12, seed=0, start=START)
    with pytest.raises(WorldError, match="naive"):
        w.click_prob(1, 1, datetime(2025, 3, 3))
    with pytest.raises(WorldError, match="item_ids"):
        w.click_prob(1, 12, START)
