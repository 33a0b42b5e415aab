"""The BentoML ranking service: HTTP in, ``flywheel.serving.RankingService`` out.

Run it with ``flywheel serve`` (or ``flywheel.serving.serve``), which sets ``BENTOML_HOME``,
the ``FLYWHEEL_*`` settings, the worker count and ``$RANKER_OPTIONS`` for
``bentoml serve serving.service:Ranker``. Endpoints: ``POST /rank``, ``POST /feedback``, and
BentoML's ``/healthz``, ``/livez``, ``/readyz`` (ready once a champion is loaded),
``/metrics`` (Prometheus, with the ``flywheel_*`` counters below) and ``/docs``.

Status codes: 200; 400 for a body that is not valid JSON or breaks the request model
(``detail[].loc`` names the field); 413 for a body over 64 KiB; 503 while there is no
champion, no candidate set, or (``serving.degraded_mode`` off) no reachable online store.
``/readyz`` follows the online store too (``flywheel.serving.store_health``).
"""

from __future__ import annotations

from typing import Any, Literal

import bentoml

with bentoml.importing():
    from starlette.responses import JSONResponse, RedirectResponse

    from flywheel.serving import (
        MAX_BODY_BYTES,
        SERVICE_NAME,
        BodySizeLimit,
        FeedbackRequest,
        FeedbackResponse,
        OnlineStoreDownError,
        RankingService,
        RankRequest,
        RankResponse,
        RefuseFormBodies,
        ServingError,
        options_from_env,
    )

_METRICS: dict[str, Any] = {}
#: Marks our counters in the /metrics text.
_FIRST_METRIC = "flywheel_rank_requests_total"


def _metrics() -> dict[str, Any]:
    """Our Prometheus counters, created once per process and only after BentoML has set
    up multiprocess collection (prometheus_client must not be imported before that).

    They live in a registry of their own: under ``bentoml serve`` each worker's values go
    to the multiprocess files BentoML aggregates; in a single process (``to_asgi``) they
    are rendered from this registry by ``Ranker.__metrics__``.
    """
    if not _METRICS:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        registry = CollectorRegistry()
        _METRICS["registry"] = registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, mode: Literal["min", "max"]) -> Any:
            # ``mode``: how bentoml serve's workers combine (min: any worker's outage shows).
            return Gauge(name, doc, registry=registry, multiprocess_mode=mode)

        _METRICS.update(
            requests=counter("flywheel_rank_requests", "Rank requests answered"),
            served=counter("flywheel_served_items", "Items served in rankings"),
            explored=counter("flywheel_explored_items", "Served items chosen by exploration"),
            cold=counter("flywheel_cold_start_requests", "Rank requests for cold-start users"),
            default=counter(
                "flywheel_default_candidate_requests", "Rank requests using default candidates"
            ),
            feedback=counter("flywheel_feedback", "Feedback events recorded", ("event_type",)),
            unknown=counter(
                "flywheel_feedback_unknown_request", "Feedback naming an unknown request_id"
            ),
            degraded=counter(
                "flywheel_degraded_requests", "Rank requests answered without the online store"
            ),
            unavailable=counter(
                "flywheel_online_store_unavailable_requests",
                "Rank requests refused (503) because the online store is unreachable",
            ),
            store_errors=counter(
                "flywheel_online_store_errors", "Online store reads or pings that failed"
            ),
            store_up=gauge("flywheel_online_store_up", "1 while the online store answers", "min"),
            rows_lost=gauge(
                "flywheel_online_store_rows_lost",
                "1 while nearly every user reads as cold after they did not (rows lost)",
                "max",
            ),
            cold_share=gauge(
                "flywheel_cold_user_share",
                "Share of cold users over the last serving.lost_rows_window store reads",
                "max",
            ),
        )
    return _METRICS


def _unavailable(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503)


@bentoml.service(name=SERVICE_NAME, workers=1, traffic={"timeout": 30})
class Ranker:
    """Ranks items for a user with the champion model from Feast's online features."""

    def __init__(self) -> None:
        from flywheel.config import load_settings

        settings = load_settings()
        self.core = RankingService(settings, options_from_env())
        self.metrics = m = _metrics()
        m["store_up"].set(1)
        m["rows_lost"].set(0)
        self.core.health.on_change = m["store_up"].set
        self.core.health.on_failure = m["store_errors"].inc
        self.core.lost_rows.on_change = m["rows_lost"].set
        self.core.lost_rows.on_share = m["cold_share"].set
        #: What `flywheel monitor` last wrote, exported on /metrics as gauges.
        self.monitor_json = settings.workspace / "monitor" / "monitor.json"
        import gc

        # Everything loaded so far (Feast, BentoML, the model) lives as long as the worker:
        # moving it out of the collector's generations keeps full collections, triggered by
        # the per-request allocations, from walking it again and again.
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.core.ready()

    def __metrics__(self, content: str) -> str:
        """Add our counters when BentoML's multiprocess collection did not include them,
        and the latest ``monitor.json`` as gauges (``flywheel.monitor.gauges``)."""
        from flywheel.monitor.gauges import monitor_gauges

        gauges = monitor_gauges(self.monitor_json)
        if _FIRST_METRIC in content:
            return content + gauges
        from prometheus_client import generate_latest

        return content + generate_latest(self.metrics["registry"]).decode() + gauges

    @bentoml.api(route="/rank", input_spec=RankRequest, output_spec=RankResponse)
    async def rank(
        self, user_id: str, candidates: list[str] | None = None, k: int = 10
    ) -> RankResponse | JSONResponse:
        """Rank ``candidates`` (default: popular and new items) for ``user_id``; top ``k``.

        ``async`` although nothing in it awaits: a ranking is ~2 ms of CPU that holds the
        GIL whichever thread runs it, and running it on the event loop saves BentoML's hop
        to its one sync-endpoint thread, whose GIL hand-offs with the loop cost about as
        much CPU as the ranking under concurrent requests (serving_bench.py, issue #11).
        """
        try:
            outcome = self.core.rank(RankRequest(user_id=user_id, candidates=candidates, k=k))
        except OnlineStoreDownError as exc:
            self.metrics["unavailable"].inc()
            return _unavailable(exc)
        except (ServingError, ConnectionError) as exc:
            return _unavailable(exc)
        m = self.metrics
        m["requests"].inc()
        if outcome.degraded:
            m["degraded"].inc()
        m["served"].inc(len(outcome.response.items))
        m["explored"].inc(outcome.explored)
        m["cold"].inc(outcome.cold_start)
        m["default"].inc(outcome.default_candidates)
        return outcome.response

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    def feedback(self, request_id: str, item_id: str, event_type: str) -> Any:
        """Record what the user did with a served item (click, cart or purchase)."""
        request = FeedbackRequest.model_validate(
            {"request_id": request_id, "item_id": item_id, "event_type": event_type}
        )
        try:
            answer = self.core.feedback(request)
        except (ServingError, ConnectionError) as exc:
            return _unavailable(exc)
        self.metrics["feedback"].labels(event_type=event_type).inc()
        if answer.note is not None:
            self.metrics["unknown"].inc()
        return answer


async def _docs(scope: Any, receive: Any, send: Any) -> None:
    """``/docs``: BentoML 1.4 serves its Swagger UI at ``/`` (spec at ``/docs.json``)."""
    await RedirectResponse("/")(scope, receive, send)


# ``@bentoml.service`` turned the class into a ``Service``; mypy still sees the class.
Ranker.add_asgi_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)  # type: ignore[attr-defined]
Ranker.add_asgi_middleware(RefuseFormBodies)  # type: ignore[attr-defined]
Ranker.mount_asgi_app(_docs, path="/docs")  # type: ignore[attr-defined]
