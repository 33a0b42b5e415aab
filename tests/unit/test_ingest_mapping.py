"""Source mappings: loading and validating YAML, mapping one batch, derived ids (no Ray)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flywheel.ingest import (
    CheckContext,
    MappingError,
    builtin_mappings,
    load_mapping,
    mapping_argument,
    mapping_from_argument,
    parse_mapping,
    validate_mapped,
)
from flywheel.ingest.derive import event_ids, session_ids
from flywheel.schemas import EVENT_SCHEMA, ITEM_SCHEMA

CTX = CheckContext(now=datetime(2024, 1, 1, tzinfo=UTC))
MINUTE_US = 60_000_000
MINIMAL = """
name: mine
columns: {user_id: who, item_id: what, event_type: kind, ts: at}
event_types: {seen: view, bought: purchase}
"""


def rr_table(rows: Sequence[tuple[str, ...]]) -> pa.Table:
    """Rows in the RetailRocket layout, as strings (the way its CSV arrives)."""
    names = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    return pa.table({n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)})


def test_builtin_mappings_load() -> None:
    assert builtin_mappings() == ["rees46", "retailrocket"]
    rr = load_mapping("retailrocket")
    assert (rr.columns.item_id, rr.timestamps.format, rr.columns.session_id) == (
        "itemid",
        "epoch_ms",
        None,
    )
    rees = load_mapping("rees46")
    assert rees.drop_event_types == ["remove_from_cart"]
    assert rees.items is not None and rees.items.category == ["category_code", "category_id"]


def test_user_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(MINIMAL)
    mapping = load_mapping(path)
    assert mapping.event_types == {"seen": "view", "bought": "purchase"}
    assert mapping.sessions.gap_minutes == 30 and mapping.device == "unknown"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL.replace("who", "who, usr_id: x"), "columns.usr_id: Extra inputs"),
        (MINIMAL + "event_typez: {}\n", "event_typez: Extra inputs"),
        (MINIMAL.replace("bought: purchase", "bought: like"), "event_types.bought"),
        (MINIMAL.replace("ts: at", "tz: at"), "columns.ts: Field required"),
        (MINIMAL + "timestamps: {format: epoch_us}\n", "timestamps.format"),
        (MINIMAL + "timestamps: {zone: Mars/Base}\n", "timestamps.zone"),
        (MINIMAL + "sessions: {gap_minutes: 0}\n", "sessions.gap_minutes"),
        (MINIMAL + "drop_event_types: [SEEN]\n", "both mapped and dropped: ['seen']"),
        ("- a\n- b\n", "expected a mapping of keys"),
    ],
)
def test_bad_mapping_names_the_key(text: str, key: str) -> None:
    with pytest.raises(MappingError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_mapping(text, "mine.yaml")


def test_unknown_mapping_name_lists_builtins() -> None:
    with pytest.raises(MappingError, match="rees46, retailrocket"):
        load_mapping("shopify")


def test_missing_source_column_names_it_and_its_key() -> None:
    table = rr_table([("1433221332117", "1", "view", "5", "")]).drop(["itemid"])
    with pytest.raises(MappingError, match=r"needs column 'itemid' \(columns\.item_id\)"):
        validate_mapped(table, load_mapping("retailrocket"), CTX, "events.csv")


def test_retailrocket_rows_map_to_events() -> None:
    rows = [
        ("1433221332117", "257597", "view", "355908", ""),
        ("1433224214164", " 992329 ", "ADDTOCART", "248676", ""),
        ("1433193500981", "121688", "transaction", "15335", "11117"),
        ("1433221332117", "", "view", "1", ""),
        ("1433221332117", "3", "click", "1", ""),
        ("yesterday", "3", "view", "1", ""),
    ]
    out = validate_mapped(rr_table(rows), load_mapping("retailrocket"), CTX, "events.csv")
    valid = out.validation.valid
    assert valid.schema == EVENT_SCHEMA
    assert valid.column("user_id").to_pylist() == ["257597", "992329", "121688"]
    assert valid.column("event_type").to_pylist() == ["view", "cart", "purchase"]
    assert valid.column("ts").to_pylist()[0] == datetime(2015, 6, 2, 5, 2, 12, 117000, tzinfo=UTC)
    assert set(valid.column("device").to_pylist()) == {"unknown"}
    assert out.validation.valid_index.tolist() == [0, 1, 2]
    assert out.validation.dropped_columns == ("transactionid",)
    q = out.validation.quarantine
    assert q.column("reason").to_pylist() == [
        "visitorid is missing",
        "event is not one of addtocart|transaction|view: 'click'",
        "timestamp is not epoch milliseconds: 'yesterday'",
    ]
    assert json.loads(q.column("row")[1].as_py())["event"] == "click"  # the source row
    assert out.validation.reasons == {
        "visitorid is missing": 1,
        "event is not one of addtocart|transaction|view": 1,
        "timestamp is not epoch milliseconds": 1,
    }


def test_dropped_words_are_counted_not_quarantined() -> None:
    mapping = parse_mapping(MINIMAL + "drop_event_types: [returned]\n")
    raw = pa.table(
        {
            "who": ["a", "b", "c", "d"],
            "what": ["i", "j", "k", "l"],
            "kind": ["seen", " Returned", "returned", "bought"],
            "at": ["2023-05-01T10:00:00Z"] * 4,
        }
    )
    out = validate_mapped(raw, mapping, CTX)
    assert out.dropped_types == {"returned": 2}
    assert out.validation.valid_index.tolist() == [0, 3]
    assert out.validation.quarantine.num_rows == 0


def test_declared_zone_for_naive_times_and_device_default() -> None:
    mapping = parse_mapping(
        MINIMAL.replace("ts: at}", "ts: at, device: dev}")
        + "timestamps: {zone: Europe/Berlin}\ndevice: web\n"
    )
    raw = pa.table(
        {
            "who": ["a", "b", "c"],
            "what": ["i", "j", "k"],
            "kind": ["seen", "seen", "seen"],
            "at": ["2023-07-01 12:00:00", "2023-07-01T12:00:00+00:00", "2023-03-26 02:30:00"],
            "dev": ["ios", " ", None],
        }
    )
    out = validate_mapped(raw, mapping, CTX)
    assert out.validation.valid.column("ts").to_pylist() == [
        datetime(2023, 7, 1, 10, tzinfo=UTC),
        datetime(2023, 7, 1, 12, tzinfo=UTC),
    ]
    assert out.validation.valid.column("device").to_pylist() == ["ios", "web"]
    assert out.validation.quarantine.column("reason").to_pylist() == [
        "at does not exist or is ambiguous in Europe/Berlin: '2023-03-26 02:30:00'"
    ]


def test_items_from_event_attributes() -> None:
    raw = pa.table(
        {
            "event_time": ["2019-10-01 00:00:04 UTC"] * 3,
            "event_type": ["view", "cart", "view"],
            "product_id": ["1004237", "1004237", "77"],
            "category_id": ["2053013555631882655", "2053013555631882655", "99"],
            "category_code": ["electronics.smartphone", "", ""],
            "brand": ["apple", "apple", ""],
            "price": ["1081.98", "0.00", "5.5"],
            "user_id": ["535871217", "535871217", "1"],
            "user_session": ["c6bd", "c6bd", "x"],
        }
    )
    out = validate_mapped(raw, load_mapping("rees46"), CTX)
    assert out.validation.valid.num_rows == 3  # a bad price does not cost the event
    assert out.items is not None and out.items.schema == ITEM_SCHEMA
    assert [(r["item_id"], r["category"], r["price"]) for r in out.items.to_pylist()] == [
        ("1004237", "electronics.smartphone", 1081.98),
        ("77", "99", 5.5),
    ]
    assert out.items_index.tolist() == [0, 2]
    assert out.items_quarantine.column("reason").to_pylist() == [
        "price is not a positive finite number: '0.00'"
    ]


def events(rows: list[tuple[str, str, str, datetime]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def test_event_ids_depend_on_exactly_user_item_type_and_time() -> None:
    t = datetime(2015, 6, 2, tzinfo=UTC)
    base = ("u1", "i1", "view", t)
    variants = [
        base,
        base,
        ("u2", "i1", "view", t),
        ("u1", "i2", "view", t),
        ("u1", "i1", "cart", t),
        ("u1", "i1", "view", t + timedelta(microseconds=1)),
        ("u1i", "1", "view", t),  # field boundaries are not ambiguous
    ]
    ids = event_ids(events(variants)).to_pylist()
    assert ids[0] == ids[1]
    assert len(set(ids)) == len(variants) - 1
    assert all(i.startswith("ev-") and len(i) == 35 for i in ids)
    assert event_ids(events([base])).to_pylist() == ids[:1]  # independent of the batch


def _sessions(users: list[str], minutes: list[float], known: list[str | None]) -> list[str]:
    ts = np.array([round(m * MINUTE_US) for m in minutes], np.int64)
    return session_ids(
        pa.array(users), ts, pa.array(known, pa.string()), np.arange(len(users)), 30 * MINUTE_US
    ).to_pylist()


def test_sessions_split_on_a_gap_longer_than_30_minutes() -> None:
    users = ["a", "a", "a", "b", "a", "b"]
    minutes = [0, 30, 60.0001, 0, 10, 31]  # input not in time order
    got = _sessions(users, minutes, [None] * 6)
    assert got[0] == got[1] == got[4]  # exactly 30 min apart stays one session
    assert got[2] != got[0]
    assert got[3] != got[5]  # 31 minutes for b
    assert len(set(got)) == 4


def test_sessions_continue_lake_sessions_and_splitting_a_run_changes_nothing() -> None:
    rng = np.random.default_rng(5)
    n = 400
    users = [f"u{k}" for k in rng.integers(0, 12, n)]
    minutes = np.cumsum(rng.exponential(6, n)).tolist()
    whole = _sessions(users, minutes, [None] * n)
    first = [i for i in range(n) if minutes[i] < minutes[n // 2]]
    rest = [i for i in range(n) if i not in first]
    early = _sessions([users[i] for i in first], [minutes[i] for i in first], [None] * len(first))
    # The second run sees the first run's events as lake events with their stored ids.
    both = [*first, *rest]
    known = [*early, *([None] * len(rest))]
    later = _sessions([users[i] for i in both], [minutes[i] for i in both], known)
    assert later[: len(first)] == early
    assert dict(zip(both, later, strict=True)) == dict(enumerate(whole))
    assert len(set(whole)) > 12  # several sessions per user: the gaps are really exercised


def test_cli_bad_mapping_is_one_red_line_before_anything_is_read(
    tmp_path: Path, restore_logging: None
) -> None:
    from typer.testing import CliRunner

    from flywheel.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("who", "who, usr: x"))
    args = ["--workspace", str(tmp_path / "ws"), "ingest", "--events", str(tmp_path)]
    for mapping, words in [("shopify", "shopify"), (str(bad), "columns.usr")]:
        result = CliRunner().invoke(app, [*args, "--mapping", mapping])
        assert result.exit_code == 1, result.output
        assert "error:" in result.output and words in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "ws" / "lake").exists()


def test_pipeline_argument_round_trip(tmp_path: Path) -> None:
    """What a caller sends (:func:`mapping_argument`) the ingest pod reads back as the same
    mapping; a file travels as its text, so the pod needs no copy of it."""
    path = tmp_path / "mine.yaml"
    path.write_text(MINIMAL)
    sent = mapping_argument(str(path))
    assert sent == MINIMAL
    path.unlink()  # the pod has no such file
    assert mapping_from_argument(sent) == parse_mapping(MINIMAL)
    assert mapping_argument("rees46") == "rees46"
    assert mapping_from_argument("rees46") == load_mapping("rees46")
    cols = "{user_id: a, item_id: b, event_type: c, ts: d}"
    flow = f"{{name: m, columns: {cols}, event_types: {{v: view}}}}"
    assert mapping_argument(flow) == flow
    assert mapping_from_argument(flow) == parse_mapping(flow)
    assert mapping_argument("") == ""
    assert mapping_from_argument("") is None and mapping_from_argument("  ") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (MINIMAL.replace("who", "who, usr: x"), r"mapping text: columns\.usr: Extra inputs"),
        ("shopify", "neither a YAML file nor a built-in"),
        ("missing.yaml", "missing.yaml: cannot read"),
    ],
)
def test_pipeline_argument_is_validated_on_the_callers_side(value: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        mapping_argument(value)
