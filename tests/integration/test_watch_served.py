"""``flywheel monitor --decide`` and ``flywheel watch`` over traffic that a real
``bentoml serve`` (two workers) answered: simulated users rank and post feedback over HTTP,
the monitor's counts equal what the clients were served and posted, the logged features
equal the offline store's (no skew), and the watcher logs each decision with its reasons.
When the policy fires, ``watch --submit-host`` calls the KFP API; no KFP API server can run
here, so the test points it at a closed loopback port and checks that the failed
submission is recorded and the watcher goes on (the submission itself is tested against a
recorded KFP client in tests/unit/test_submit.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

# Imported under its module name (pytest's "prepend" import mode, as the other serving
# modules do) for the served world and the server helpers.
import test_service as service_tests
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.predlog import read_prediction_logs
from flywheel.registry import current_champion
from flywheel.simulate import IdNaming, make_world
from flywheel.simulate.traffic import http_feedback, run_traffic
from tests.ports import on_free_ports

pytestmark = pytest.mark.integration

REQUESTS, K = 40, 5


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = service_tests.served_world(
        Settings(workspace=tmp_path_factory.mktemp("watch-served") / "ws")
    )
    url, process = on_free_ports(lambda port: service_tests._start_on(settings, port))
    try:
        users = make_world(
            service_tests.N_USERS, service_tests.N_ITEMS, seed=23, naming=IdNaming(item="sku-{}")
        )
        ranker = service_tests._RecordingRanker(url, users.ids)
        posted: set[tuple[str, str]] = set()
        post = http_feedback(url, ids=users.ids)

        def feedback(request_id: str, item: int, event_type: str) -> None:
            post(request_id, item, event_type)
            posted.add((request_id, users.ids.item_id(item)))

        summary = run_traffic(users, ranker, REQUESTS, seed=6, k=K, feedback=feedback)
        yield {"settings": settings, "ranker": ranker, "posted": posted, "summary": summary}
    finally:
        service_tests.kill_9(process)


def _env(settings: Settings, **policy: str) -> dict[str, str]:
    env = {"FLYWHEEL_WORKSPACE": str(settings.workspace)}
    env.update({f"FLYWHEEL_RETRAIN__{k.upper()}": v for k, v in policy.items()})
    return env


def test_monitor_counts_what_the_service_served_and_heard(live: dict[str, Any]) -> None:
    settings: Settings = live["settings"]
    out = settings.workspace / "monitor-test"
    result = CliRunner().invoke(app, ["monitor", "--out", str(out), "--decide"], env=_env(settings))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "monitor.json").read_text())
    served = live["ranker"].served
    assert record["totals"]["requests"] == len(served) == REQUESTS
    assert record["totals"]["impressions"] == sum(len(v) for v in served.values()) == REQUESTS * K
    (version,) = record["quality"]["versions"]
    assert version["model_version"] == current_champion(settings)
    # every (request, item) the users posted feedback about counts as one engaged impression
    assert version["ctr"]["successes"] == len(live["posted"]) > 0
    assert version["ctr"]["trials"] == REQUESTS * K
    # the service read its features from the online store the offline store feeds: no skew
    skew = record["skew"]
    assert "error" not in skew, skew
    assert skew["rows"] > 0 and skew["features"]
    assert all(f["equal_share"] >= 0.99 for f in skew["features"]), [
        x
        for x in [(f["feature"], f["equal_share"], f["max_abs_diff"]) for f in skew["features"]]
        if x[1] < 0.99
    ]
    # a champion registered minutes ago with a few hundred impressions: no rule fires
    assert record["trigger"]["fire"] is False, record["trigger"]
    assert "trigger: no retrain" in result.output


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_watch_logs_quiet_and_firing_decisions_and_survives_a_failed_submission(
    live: dict[str, Any],
) -> None:
    settings: Settings = live["settings"]
    decisions = settings.workspace / "watch" / "decisions.jsonl"
    quiet = CliRunner().invoke(
        app, ["watch", "--max-ticks", "1", "--interval", "0"], env=_env(settings)
    )
    assert quiet.exit_code == 0, quiet.output
    first = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert len(first) == 1 and first[0]["fire"] is False and "cycle" not in first[0]
    assert "no action" in quiet.output

    # the schedule rule: any champion older than ~4 seconds is due
    host = f"http://127.0.0.1:{_closed_port()}"
    fired = CliRunner().invoke(
        app,
        ["watch", "--max-ticks", "1", "--interval", "0", "--submit-host", host],
        env=_env(settings, max_champion_age_h="0.001", min_interval_h="0"),
    )
    # one bounded tick whose submission failed: exit 1 (the CronJob's Job shows Failed)
    assert fired.exit_code == 1, fired.output
    records = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert len(records) == 2
    last = records[-1]
    assert last["fire"] is True
    assert any("age" in reason for reason in last["reasons"]), last
    assert last["cycle"].startswith("failed:"), last
    assert "retrain" in fired.output
    # the watcher only reads the served logs: every impression is still there
    assert len(read_prediction_logs(settings)) == REQUESTS * K
