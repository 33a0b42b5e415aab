"""String ids end to end on a shop that names its users ``u000042`` and items ``sku-00017``.

``flywheel simulate --ids shop`` writes 3 days of web logs; a first cycle (kfp.local: ingest,
Ray Data features, Feast, dataset, preprocess, Ray Train, evaluate, register, deploy) trains
the champion; a real ``bentoml serve`` answers simulated users (``flywheel traffic``:
``http_ranker`` / ``http_feedback`` with ``ids=world.ids``) and a few hand-made requests; a
second cycle ingests the next day's events and the service's logs. Every stage must carry the shop's
exact strings: nothing re-typed, padded, lost or replaced by a surrogate key.

Integer ids are covered elsewhere: ``test_cycle.py`` runs the same cycle on a world with
plain naming (ids "0".."1499", whose string order is not numeric order), and
``test_service.py`` sends user ids as JSON integers; here one request sends an integer too.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flywheel import feature_store, served
from flywheel.cli import app
from flywheel.config import RaySettings, Settings
from flywheel.cycle import CycleSummary, run_cycle
from flywheel.evaluate import BlessingRule
from flywheel.lake import feature_time, partition_files, read_lake_events
from flywheel.predlog import read_feedback_logs, read_prediction_logs
from flywheel.registry import model_store
from flywheel.report import model_report, served_impressions
from flywheel.schemas import FEEDBACK_SCHEMA, PREDICTION_LOG_SCHEMA
from flywheel.serving import ServingOptions, start_server, wait_ready
from flywheel.simulate import SHOP, World, simulate_events
from flywheel.simulate.traffic import post_json

# Several kfp.local cycles (~2 min): `make test-slow`, not the default `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS, ITEMS, DAYS, SEED, REQUESTS, K = 400, 80, 3, 7, 60, 10
USER_ID = re.compile(r"u\d{6}")
ITEM_ID = re.compile(r"sku-\d{5}")


@dataclass(frozen=True)
class Shop:
    settings: Settings
    world: World
    raw: Path
    first: CycleSummary
    second: CycleSummary
    #: /rank answers as the service sent them (JSON bodies).
    answers: list[dict[str, Any]]
    #: (request id, item id) of the feedback posted by hand.
    posted: tuple[str, str]

    @property
    def users(self) -> set[str]:
        return set(self.world.ids.user_ids(range(self.world.n_users)).to_pylist())

    @property
    def items(self) -> set[str]:
        return set(self.world.ids.item_ids(range(self.world.n_items)).to_pylist())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(settings: Settings, run_id: str, stage: str) -> dict[str, Any]:
    path = settings.workspace / "runs" / run_id / f"{stage}.json"
    return dict(json.loads(path.read_text())["summary"])


def _serve(
    settings: Settings, world: World, raw: Path
) -> tuple[list[dict[str, Any]], tuple[str, str]]:
    """Serve the champion, play simulated traffic and a few hand-made requests; stop."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logfile = (settings.workspace / "server.log").open("wb")
    process = start_server(
        settings, port=port, options=ServingOptions(clock="lake", seed=SEED), stdout=logfile,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    answers: list[dict[str, Any]] = []
    try:
        wait_ready(url, timeout_s=120.0, process=process)
        # simulated users at the lake's feature time, through the world's naming
        args = ["--workspace", str(settings.workspace), "traffic", "--url", url,
                "--requests", str(REQUESTS), "--k", str(K), "--seed", str(SEED),
                "--world", str(raw / "world")]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        # By hand: a known user with SKU candidates, the same user's id as JSON text, and
        # an integer id (a user this shop does not have: a cold start, still answered).
        user = world.ids.user_id(12)
        candidates = world.ids.item_ids(range(0, ITEMS, 4)).to_pylist()
        for body in (
            {"user_id": user, "candidates": candidates, "k": 5},
            {"user_id": f"  {user} ", "k": K},  # padding is not part of the id
            {"user_id": 12, "k": K},
        ):
            answers.append(post_json(f"{url}/rank", body, 10.0))
        first = answers[0]
        item = first["items"][0]["item_id"]
        reply = post_json(
            f"{url}/feedback",
            {"request_id": first["request_id"], "item_id": item, "event_type": "cart"},
            10.0,
        )
        assert reply == {"status": "recorded", "note": None}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logfile.close()
    return answers, (first["request_id"], item)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("string-ids")
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("FLYWHEEL_", "AWS_", "RANKER_")):
                env.delenv(name)
        settings = Settings(workspace=root / "ws", ray=RaySettings(num_cpus=2))
        raw = root / "raw"
        args = ["--workspace", str(settings.workspace), "simulate", "--users", str(USERS),
                "--items", str(ITEMS), "--days", str(DAYS), "--seed", str(SEED), "--ids", "shop",
                "--out", str(raw)]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        world = World.load(raw / "world")
        assert world.naming == SHOP
        # The first model must deploy whatever its AUC (floor and popularity check off):
        # this test is about ids, not quality.
        rule = BlessingRule(min_auc=0.0, min_lift_over_popularity=None)
        first = run_cycle(
            settings, str(raw / "events"), str(raw / "items.parquet"), window_days=DAYS,
            seed=0, rule=rule,
        )  # fmt: skip
        assert first.blessed and first.champion_after is not None
        answers, posted = _serve(settings, world, raw)
        simulate_events(world, 1, root / "day3", start_day=DAYS, seed=SEED)
        second = run_cycle(settings, str(root / "day3" / "events"), window_days=2, seed=0)
        yield Shop(settings, world, raw, first, second, answers, posted)


def _strings(values: list[Any]) -> set[str]:
    assert all(isinstance(v, str) for v in values), {type(v) for v in values}
    return set(values)


def test_lake_holds_the_worlds_ids(shop: Shop) -> None:
    lake = read_lake_events(shop.settings, columns=["user_id", "item_id", "device"])
    assert str(lake.schema.field("user_id").type) == "string"
    users, items = _strings(lake["user_id"].to_pylist()), _strings(lake["item_id"].to_pylist())
    raw = pq.read_table(shop.raw / "events", columns=["user_id", "item_id"])
    day3 = pq.read_table(shop.raw.parent / "day3" / "events", columns=["user_id", "item_id"])
    organic = set(raw["user_id"].to_pylist()) | set(day3["user_id"].to_pylist())
    api = lake.filter(pc.equal(lake["device"], "api"))["user_id"].to_pylist()
    # exactly the simulator's strings: every user who acted or gave feedback, no other id
    assert users == organic | set(api) and users <= shop.users
    assert all(USER_ID.fullmatch(u) for u in users)
    assert items <= shop.items and len(items) > ITEMS // 2
    catalog = pq.read_table(shop.settings.items_path)["item_id"].to_pylist()
    assert sorted(catalog) == sorted(shop.items)


def test_feature_tables_and_feast_online_rows_are_keyed_by_the_ids(shop: Shop) -> None:
    folder = shop.settings.feature_data_dir
    names = ("user_activity", "item_catalog", "item_activity")
    tables = {n: pq.read_table(folder / f"{n}.parquet") for n in names}
    lake_users = set(read_lake_events(shop.settings, columns=["user_id"])["user_id"].to_pylist())
    assert _strings(tables["user_activity"]["user_id"].to_pylist()) == lake_users
    assert _strings(tables["item_catalog"]["item_id"].to_pylist()) == shop.items
    assert _strings(tables["item_activity"]["item_id"].to_pylist()) <= shop.items
    # Online: the most active user and a few items, looked up by their strings.
    activity = tables["user_activity"].to_pandas()
    user = str(activity.groupby("user_id")["views_7d"].max().idxmax())
    views = tables["item_activity"].to_pandas().groupby("item_id")["item_views_7d"].max()
    items = [str(i) for i in views.sort_values(ascending=False).index[:3]]
    at = feature_time(shop.settings)
    online = feature_store.online_features(shop.settings, user, items, as_of=at)
    assert online["user_id"].tolist() == [user] * 3 and online["item_id"].tolist() == items
    assert online["views_7d"].notna().all() and (online["views_7d"] > 0).all()
    catalog = tables["item_catalog"].to_pandas().set_index("item_id")["category"]
    assert online["category"].tolist() == [catalog[i] for i in items]
    assert online["price"].notna().all()


def test_training_sets_and_shards_carry_the_ids(shop: Shop) -> None:
    # "12", the integer id a hand-made request sent, was served: its impressions train too
    users = shop.users | {"12"}
    frames = []
    for run in (shop.first, shop.second):
        shards = Path(_record(shop.settings, run.run_id, "preprocess")["shards_dir"])
        training_set = shards.parent.parent / "dataset" / "training_set"
        frame = pq.read_table(training_set).to_pandas()
        assert _strings(frame["user_id"].tolist()) <= users
        assert _strings(frame["item_id"].tolist()) <= shop.items
        for split in ("train", "valid", "test"):
            table = pq.read_table(shards / split)
            assert table.schema.field("user_id").type == pa.string(), split
            assert _strings(table["user_id"].to_pylist()) <= users
            assert _strings(table["item_id"].to_pylist()) <= shop.items
        frames.append(frame)
    frame = frames[1]
    # The second training set mixes in the impressions the service logged, by their ids.
    logged = read_prediction_logs(shop.settings).to_pandas()
    pairs = set(zip(logged["request_id"], logged["item_id"], strict=True))
    served_rows = frame.loc[frame["source"] == "served"]
    assert len(served_rows) > 0
    assert set(zip(served_rows["group_id"], served_rows["item_id"], strict=True)) <= pairs
    by_request = dict(zip(logged["request_id"], logged["user_id"], strict=True))
    assert all(by_request[g] == u for g, u in zip(served_rows.group_id, served_rows.user_id,
                                                  strict=True))  # fmt: skip


def test_rank_answers_hold_catalog_ids_and_feedback_takes_a_string_item(shop: Shop) -> None:
    known, padded, integer = shop.answers
    candidates = set(shop.world.ids.item_ids(range(0, ITEMS, 4)).to_pylist())
    for answer in shop.answers:
        ids = [e["item_id"] for e in answer["items"]]
        assert _strings(ids) <= shop.items and all(ITEM_ID.fullmatch(i) for i in ids)
        assert len(set(ids)) == len(ids)
    assert {e["item_id"] for e in known["items"]} <= candidates
    user = shop.world.ids.user_id(12)
    assert known["request_id"].endswith(f"-{user}") and padded["request_id"].endswith(f"-{user}")
    assert integer["request_id"].endswith("-12") and len(integer["items"]) == K
    feedback = read_feedback_logs(shop.settings).to_pandas()
    assert shop.posted in set(zip(feedback["request_id"], feedback["item_id"], strict=True))


def test_logs_and_report_inputs_hold_the_same_strings(shop: Shop) -> None:
    predictions = read_prediction_logs(shop.settings).to_pandas()
    feedback = read_feedback_logs(shop.settings).to_pandas()
    assert len(predictions) == REQUESTS * K + 5 + 2 * K
    logged_users = _strings(predictions["user_id"].tolist())
    assert logged_users - {"12"} <= shop.users and "12" in logged_users
    assert _strings(predictions["item_id"].tolist()) <= shop.items
    assert _strings(feedback["item_id"].tolist()) <= shop.items and len(feedback) > 1
    # Every answer is in the log exactly as sent.
    slates = {
        rid: list(g.sort_values("position")["item_id"])
        for rid, g in predictions.groupby("request_id")
    }
    for answer in shop.answers:
        assert slates[answer["request_id"]] == [e["item_id"] for e in answer["items"]]
    # `flywheel report` reads these logs: its impressions are keyed by the same strings.
    impressions = served_impressions(predictions, feedback)
    hit = impressions.loc[impressions["engaged"]]
    engaged = set(zip(hit["request_id"], hit["item_id"], strict=True))
    assert engaged == set(zip(feedback["request_id"], feedback["item_id"], strict=True))
    report = model_report(shop.settings)
    assert report.impressions == len(predictions) and report.unmatched_feedback == 0
    result = CliRunner().invoke(app, ["--workspace", str(shop.settings.workspace), "report"])
    assert result.exit_code == 0, result.output
    assert f"{report.impressions:,} impressions" in result.output


def test_the_next_cycle_ingests_the_served_logs_by_their_ids(shop: Shop) -> None:
    ingest = _record(shop.settings, shop.second.run_id, "ingest")["served"]
    predictions = read_prediction_logs(shop.settings).to_pandas()
    feedback = read_feedback_logs(shop.settings).to_pandas()
    assert ingest["predictions_accepted"] == len(predictions) and ingest["quarantined"] == 0
    assert ingest["feedback_unmatched"] == 0

    def lake(root: Path, schema: pa.Schema) -> Any:
        parts = [pq.read_table(f, schema=schema) for f in partition_files(root)]
        return pa.concat_tables(parts).to_pandas()

    in_lake = lake(served.predictions_dir(shop.settings), PREDICTION_LOG_SCHEMA)
    key = ["request_id", "user_id", "item_id"]
    assert sorted(map(tuple, in_lake[key].to_numpy().tolist())) == sorted(
        map(tuple, predictions[key].to_numpy().tolist())
    )
    fb_lake = lake(served.feedback_dir(shop.settings), FEEDBACK_SCHEMA)
    assert set(zip(fb_lake.request_id, fb_lake.item_id, strict=True)) == set(
        zip(feedback.request_id, feedback.item_id, strict=True)
    )
    # Feedback became events of the request's user, under that user's string id.
    events = read_lake_events(shop.settings).to_pandas()
    api = events.loc[events["device"] == "api"]
    users = dict(zip(predictions["request_id"], predictions["user_id"], strict=False))
    assert len(api) == len(feedback)
    assert api["user_id"].tolist() == [users[r] for r in api["session_id"]]
    assert all(USER_ID.fullmatch(u) for u in api["user_id"] if u != "12")


def test_model_lineage_labels_are_sane(shop: Shop) -> None:
    import bentoml

    with model_store(shop.settings):
        model = bentoml.models.get(shop.first.champion_after or "")
    labels = model.info.labels
    assert labels["pipeline_run_id"] == shop.first.run_id
    dataset = _record(shop.settings, shop.first.run_id, "dataset")
    start = datetime.fromisoformat(labels["data_window_start"])
    end = datetime.fromisoformat(labels["data_window_end"])
    assert (start, end) == (
        datetime.fromisoformat(dataset["window_start"]),
        datetime.fromisoformat(dataset["window_end"]),
    )
    world = shop.world
    # the first cycle's window: the last DAYS days before the history's end
    assert end - start == timedelta(days=DAYS)
    assert world.start + timedelta(days=DAYS - 1) < end <= world.start + timedelta(days=DAYS)
    # Labels are lineage and metrics, never an id of the data.
    assert not any(USER_ID.search(v) or ITEM_ID.search(v) for v in labels.values())
    assert 0.0 <= float(labels["auc"]) <= 1.0
