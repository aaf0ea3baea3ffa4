"""GET /metrics: Prometheus text for the whole web process (CONTRACT 4.7).

Under gunicorn every worker process writes its counters and histograms to files in
PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets it, empties it at start and marks exited
workers dead), and a scrape sums them: behind a router each scrape lands on any one process, and
still sees all of them. Anywhere else (tests, `flask run`) the counters are this process's.

Webhook events by status, the age of the oldest waiting event and the queue depth are read from
the database and the broker at scrape time, by whichever process answers.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Iterator
from datetime import datetime
from time import perf_counter
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.auth.bearer import bearer_credential
from gateway.auth.public import public
from gateway.auth.token_problems import JwkRemoteFailedToLoad, TokenProblem
from gateway.errors import Problem
from gateway.extensions import db
from gateway.health import broker_connection, cached_check
from gateway.jobs import QUEUE
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A gateway answers in milliseconds; guard calls and logins wait on upstreams for up to seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MetricsTokenInvalid(Problem):
    status, code, title = 401, "metrics_token_invalid", "Metrics token required"
    default_detail = "Send Authorization: Bearer <METRICS_BEARER_TOKEN>."


def multiprocess_mode() -> bool:
    """prometheus-client chose its value class when first imported, from PROMETHEUS_MULTIPROC_DIR;
    under gunicorn that is set before any worker imports it (gunicorn.conf.py)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """One registry per app (not prometheus_client's global one): tests build many apps."""

    def __init__(self, guard_names: frozenset[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time from the first request hook to the response, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.token_failures = Counter(
            "gateway_token_failures",
            "Session token verification failures by contract code.",
            ["code"],
            registry=self.registry,
        )
        self.guard_calls = Counter(
            "gateway_guard_calls",
            "Guard calls by service and outcome (ok, or the problem code).",
            ["service", "outcome"],
            registry=self.registry,
        )
        self.guard_names = guard_names
        # Children by label values: labels() takes a lock and builds a key on every call; a
        # plain dict read does not, and the request path pays it on every request.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float | None) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route),
            )
            self._request_children[key] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def count_guard_call(self, service: str, outcome: str) -> None:
        # Any name a client sends is not a series: only configured guards get their own.
        name = service if service in self.guard_names else "unknown"
        self.guard_calls.labels(name, outcome).inc()

    def scrape_registry(self, app: Flask) -> CollectorRegistry:
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            registry.register(_RegistryView(self.registry))
        registry.register(ScrapeTimeCollector(app))
        return registry


class _RegistryView(Collector):
    """This process's own metrics, re-exposed beside the scrape-time ones."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        return iter(self._registry.collect())


class ScrapeTimeCollector(Collector):
    """Ledger and broker state, read when scraped; a source that fails shows no sample."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        timeout = self._app.config["GATEWAY"].readiness_timeout_seconds
        # Shared with concurrent scrapes, one run at a time, like the readiness checks.
        ledger = cached_check(self._app, "ledger_state", ledger_state).future()
        depth = cached_check(self._app, "queue_depth", queue_depth).future()
        events = GaugeMetricFamily(
            "gateway_webhook_events", "Webhook events in the ledger by status.", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "gateway_oldest_waiting_event_seconds",
            "Age of the oldest webhook event waiting for a worker (received or queued); 0 when "
            "none waits.",
        )
        state = _result(ledger, timeout, "webhook events")
        if state is not None:
            counts, oldest_received_at = state
            for status, count in sorted(counts.items()):
                events.add_metric([status], count)
            waited = 0.0 if oldest_received_at is None else waited_seconds(oldest_received_at)
            oldest.add_metric([], waited)
        yield events
        yield oldest
        queue = GaugeMetricFamily(
            "gateway_queue_depth", "Messages waiting on the broker's queue.", labels=["queue"]
        )
        count = _result(depth, timeout, "queue depth")
        if count is not None:
            queue.add_metric([QUEUE], count)
        yield queue


def _result(future: Any, timeout: float, name: str) -> Any:
    try:
        return future.result(timeout)
    except Exception as exc:  # noqa: BLE001 - a scrape never fails for one source
        log.warning("metrics: %s unavailable: %s", name, type(exc).__name__)
        return None


def init_app(app: Flask) -> None:
    config = app.config["GATEWAY"]
    metrics = app.extensions["metrics"] = Metrics(frozenset(config.guard_urls))

    @app.after_request
    def count_request(response: Response) -> Response:
        # One proxy lookup for the request's several reads.
        req = request._get_current_object()  # type: ignore[attr-defined]
        # The route template, never the path: the by-email admin path carries an email.
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"
        # Any token is a method to HTTP: a client must not be able to mint new series at will.
        method = req.method if req.method in _METHODS else "other"
        started = g.get("request_started")  # set by the first request hook (app.py)
        seconds = perf_counter() - started if started is not None else None
        metrics.observe_request(route, method, response.status_code, seconds)
        code = g.get("problem_code")
        if code is not None and is_token_failure(code):
            metrics.token_failures.labels(code).inc()
        service = g.get("guard_service")  # set by the guards route once the body names one
        if service is not None:
            metrics.count_guard_call(service, code or "ok")
        return response

    app.register_blueprint(bp)


def is_token_failure(code: str) -> bool:
    return code in _token_failure_codes()


@functools.cache
def _token_failure_codes() -> frozenset[str]:
    # gateway.problems lists MetricsTokenInvalid, so it imports this module: read at first use.
    from gateway.problems import PROBLEMS

    token = (TokenProblem, JwkRemoteFailedToLoad)
    return frozenset(cls.code for cls in PROBLEMS if issubclass(cls, token))


@bp.get("/metrics")
@public
def metrics_view() -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    token = app.config["GATEWAY"].metrics_bearer_token
    if token is not None:
        given = bearer_credential(request.headers.get("Authorization"))
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise MetricsTokenInvalid(headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    metrics: Metrics = app.extensions["metrics"]
    body = generate_latest(metrics.scrape_registry(app))
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def ledger_state(app: Flask) -> tuple[dict[str, int], datetime | None]:
    """Events by status, and when the oldest event still waiting arrived (None: none waits).
    Shared with /admin/queues."""
    with app.app_context():
        try:
            rows = db.session.execute(
                select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
            ).all()
            oldest = oldest_waiting_received_at(db.session())
        finally:
            db.session.remove()
    return {str(status): int(count) for status, count in rows}, oldest


def oldest_waiting_received_at(session: Any) -> datetime | None:
    return session.scalar(
        select(func.min(WebhookEvent.received_at)).where(
            WebhookEvent.status.in_([s.value for s in EventStatus.waiting()])
        )
    )


def waited_seconds(since: datetime) -> float:
    now = utcnow()
    if since.tzinfo is None:  # SQLite hands back naive UTC
        since = since.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - since).total_seconds())


def queue_depth(app: Flask) -> int:
    with broker_connection(app) as conn:
        if conn.transport.driver_type == "redis":
            return int(conn.default_channel.client.llen(QUEUE))
        # Virtual transports (the embedded filesystem broker) count their own messages.
        return int(conn.default_channel.queue_declare(queue=QUEUE, passive=True).message_count)
