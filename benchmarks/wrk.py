"""Driving ``POST /rank`` with wrk and recording which responses it acknowledged.

The Lua script cycles through pre-made bodies; for every HTTP 200 it writes one line to an
acknowledgement file, ``<request_id> <item_id>,<item_id>,...`` (``-`` when the response has
no request id, as the naive service's), so the prediction log can be checked per request id:
each acknowledged request must have one record per item it returned. wrk calls ``response``
for every complete response it counts, so the file has exactly wrk's 2xx count of lines
(checked by the caller). At the end wrk prints its summary as one ``WRKJSON`` line.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LUA = """
local bodies = {%s}
local i = 0
local acks = nil
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
init = function(args)
  acks = assert(io.open(args[1], "w"))
  acks:setvbuf("full", 65536)
end
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/rank", nil, bodies[i])
end
response = function(status, headers, body)
  if status == 200 then
    local id = body:match('"request_id"%%s*:%%s*"([^"]*)"') or "-"
    local items = {}
    for item in body:gmatch('"item_id"%%s*:%%s*"?([^",}]*)') do items[#items + 1] = item end
    acks:write(id, " ", table.concat(items, ","), "\\n")
  end
end
done = function(s, lat, req)
  local e = s.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,' ..
    '"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,' ..
    '"max":%%d}\\n', s.requests, s.duration, e.connect, e.read, e.write, e.status,
    e.timeout, lat:percentile(50), lat:percentile(90), lat:percentile(99), lat.max))
end
"""


@dataclass(frozen=True)
class WrkRun:
    """wrk's summary of one run (latencies in microseconds) and the responses it acked."""

    requests: int
    duration_us: int
    connect: int
    read: int
    write: int
    status: int
    timeout: int
    p50: int
    p90: int
    p99: int
    max: int
    #: One entry per HTTP 200: (request id or "-", the item ids it returned).
    acks: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def ok(self) -> int:
        """Responses wrk counted that were not HTTP errors (status > 399)."""
        return self.requests - self.status

    @property
    def errors(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout


def rank_bodies(
    n_bodies: int,
    n_users: int,
    n_items: int,
    n_candidates: int,
    k: int,
    seed: int = 1,
    ids: str = "int",
) -> list[str]:
    """``n_bodies`` JSON rank bodies, each a random user and distinct random candidates.

    ``ids``: ``int`` sends JSON integers (a client of the integer era), ``shop`` sends the
    shop-like strings of ``serving_world.entity_id`` (``u42``, ``sku-17``).
    """
    from serving_world import entity_id

    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n_bodies):
        user = int(rng.integers(0, n_users))
        items = rng.choice(n_items, n_candidates, replace=False).tolist()
        body = {
            "user_id": user if ids == "int" else entity_id(user, "user", ids),
            "candidates": items if ids == "int" else [entity_id(i, "item", ids) for i in items],
            "k": k,
        }
        bodies.append(json.dumps(body, separators=(",", ":")))
    return bodies


def write_lua(path: Path, bodies: list[str]) -> Path:
    """The wrk script cycling through ``bodies`` and recording acknowledged responses."""
    path.write_text(_LUA % ",\n".join(json.dumps(b) for b in bodies))
    return path


def read_acks(path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The acknowledgement file as (request id, item ids) per HTTP 200, in arrival order
    (ids as the answer's strings; the benchmark's ids hold no comma)."""
    acks = []
    for line in path.read_text().splitlines():
        request_id, _, items = line.partition(" ")
        acks.append((request_id, tuple(i for i in items.split(",") if i)))
    return tuple(acks)


def run_wrk(url: str, script: Path, concurrency: int, duration_s: int, acks: Path) -> WrkRun:
    """Run wrk (one thread, ``concurrency`` connections), writing its acks to ``acks``."""
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", "10s"]
    argv += ["-s", str(script), url, "--", str(acks)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            summary = json.loads(line.removeprefix("WRKJSON "))
            return WrkRun(**summary, acks=read_acks(acks))
    raise RuntimeError(f"wrk printed no summary (rc {done.returncode}): {done.stderr[-500:]}")
