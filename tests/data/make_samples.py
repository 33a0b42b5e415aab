"""Write the small sample logs in the RetailRocket and REES46 layouts (fixed seeds).

Nothing here is downloaded: the rows are synthetic, shaped like the public files (columns,
value formats, quirks), for the ingest mapping tests. Re-run to regenerate; the output is
the same bytes every time::

    .venv/bin/python tests/data/make_samples.py

Quirks on purpose: RetailRocket timestamps are epoch ms and the file is not in time order,
``transactionid`` is set only on transactions, users come back after pauses longer and
shorter than 30 minutes, items are viewed again; REES46 times end in ``UTC``, ``category_code``
and ``brand`` are often empty, ``remove_from_cart`` rows, a price that changes, 19-digit
``category_id``. Both repeat a few rows exactly (double-logged events).
"""

from __future__ import annotations

import csv
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).parent


def _sessions(rng: random.Random, start: datetime, users: int) -> list[tuple[int, datetime]]:
    """(user index, event time) for a few sessions per user, pauses of 1-25 or 35-600 min."""
    out = []
    for u in range(users):
        t = start + timedelta(minutes=rng.randint(0, 600))
        for _ in range(rng.randint(1, 3)):
            for _ in range(rng.randint(1, 6)):
                out.append((u, t))
                t += timedelta(seconds=rng.randint(5, 25 * 60))
            t += timedelta(minutes=rng.randint(35, 600))
    return out


def retailrocket(path: Path, seed: int = 1) -> None:
    rng = random.Random(seed)
    visitors = [rng.randint(1, 1_407_000) for _ in range(40)]
    items = [rng.randint(1, 466_000) for _ in range(60)]
    rows = []
    transaction = 0
    for u, t in _sessions(rng, datetime(2015, 6, 2, 5, tzinfo=UTC), len(visitors)):
        item = rng.choice(items[:20]) if rng.random() < 0.5 else rng.choice(items)
        kind = rng.choices(["view", "addtocart", "transaction"], [85, 10, 5])[0]
        tid = ""
        if kind == "transaction":
            transaction += 1
            tid = str(17_000 + transaction)
        ms = int(t.timestamp() * 1000) + rng.randint(0, 999)
        rows.append([ms, visitors[u], kind, item, tid])
    rows += [list(r) for r in rng.sample(rows, 3)]  # double-logged events
    rng.shuffle(rows)  # the real file is not in time order either
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "visitorid", "event", "itemid", "transactionid"])
        w.writerows(rows)


def rees46(path: Path, seed: int = 2) -> None:
    rng = random.Random(seed)
    users = [rng.randint(400_000_000, 600_000_000) for _ in range(40)]
    codes = ["electronics.smartphone", "appliances.kitchen.washer", "", "", "furniture.bedroom"]
    products = {
        rng.randint(1_000_000, 60_000_000): (
            str(rng.randint(2_053_013_552_000_000_000, 2_053_013_559_999_999_999)),
            rng.choice(codes),
            rng.choice(["apple", "samsung", "", "lg"]),
            round(rng.uniform(5, 1500), 2),
        )
        for _ in range(50)
    }
    ids = sorted(products)
    rows = []
    for u, t in sorted(
        _sessions(rng, datetime(2019, 10, 1, tzinfo=UTC), len(users)), key=lambda r: r[1]
    ):
        pid = rng.choice(ids[:15]) if rng.random() < 0.5 else rng.choice(ids)
        cat_id, code, brand, price = products[pid]
        if rng.random() < 0.05:  # a price change: later events carry the new price
            price = round(price * rng.uniform(0.8, 1.2), 2)
            products[pid] = (cat_id, code, brand, price)
        kind = rng.choices(["view", "cart", "remove_from_cart", "purchase"], [80, 10, 5, 5])[0]
        rows.append([t, kind, pid, cat_id, code, brand, f"{price:.2f}", users[u], u])
    session_of: dict[tuple[int, int], str] = {}
    out = []
    for t, kind, pid, cat_id, code, brand, price, user, u in rows:
        key = (u, int(t.timestamp()) // 3600)  # one session per user-hour is enough here
        session = session_of.setdefault(key, str(uuid.UUID(int=rng.getrandbits(128))))
        stamp = t.strftime("%Y-%m-%d %H:%M:%S UTC")
        out.append([stamp, kind, pid, cat_id, code, brand, price, user, session])
    for i in sorted(rng.sample(range(len(out)), 3), reverse=True):
        out.insert(i + 1, list(out[i]))  # double-logged, next to the original
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            [
                "event_time",
                "event_type",
                "product_id",
                "category_id",
                "category_code",
                "brand",
                "price",
                "user_id",
                "user_session",
            ]
        )
        w.writerows(out)


def main() -> None:
    (HERE / "retailrocket").mkdir(exist_ok=True)
    (HERE / "rees46").mkdir(exist_ok=True)
    retailrocket(HERE / "retailrocket" / "events.csv")
    rees46(HERE / "rees46" / "2019-Oct-sample.csv")


if __name__ == "__main__":
    main()
