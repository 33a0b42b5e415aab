"""The simulated e-commerce world: ground truth, raw web-log events and live traffic.

``world`` holds users, the catalog and the ground-truth click/purchase model (with drift),
``events`` writes web logs in the lake's raw format, ``traffic`` plays users against a
ranker. Only numpy, pyarrow and the standard library are imported here.
"""

from flywheel.simulate.events import (
    SimulationError,
    SimulationSummary,
    simulate_events,
    users_for_events,
    write_items,
)
from flywheel.simulate.naming import NAMINGS, PLAIN, SHOP, IdNaming, NamingError
from flywheel.simulate.traffic import (
    Feedback,
    HttpRanker,
    Ranker,
    SessionResponse,
    TrafficError,
    TrafficSummary,
    examination_prob,
    http_feedback,
    http_ranker,
    oracle_ranker,
    random_ranker,
    run_traffic,
    simulate_session_response,
)
from flywheel.simulate.world import (
    DEFAULT_START,
    PREMIUM_TREND,
    PRICE_SHOCK,
    DriftWeights,
    World,
    WorldError,
    make_world,
    to_unix_us,
)

__all__ = [
    "DEFAULT_START",
    "NAMINGS",
    "PLAIN",
    "PREMIUM_TREND",
    "PRICE_SHOCK",
    "SHOP",
    "DriftWeights",
    "Feedback",
    "HttpRanker",
    "IdNaming",
    "NamingError",
    "Ranker",
    "SessionResponse",
    "SimulationError",
    "SimulationSummary",
    "TrafficError",
    "TrafficSummary",
    "World",
    "WorldError",
    "examination_prob",
    "http_feedback",
    "http_ranker",
    "make_world",
    "oracle_ranker",
    "random_ranker",
    "run_traffic",
    "simulate_events",
    "simulate_session_response",
    "to_unix_us",
    "users_for_events",
    "write_items",
]
