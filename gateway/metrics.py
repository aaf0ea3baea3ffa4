"""GET /metrics: Prometheus text. Request and token counters are this process's; webhook events
by status and the queue depth are read from the database and the broker at scrape time."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from sqlalchemy import func, select

from gateway.auth.public import public
from gateway.auth.tokens import JwkRemoteFailedToLoad, TokenProblem
from gateway.errors import Problem
from gateway.extensions import db
from gateway.health import broker_connection
from gateway.models import WebhookEvent

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
QUEUE = "gateway"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Scrape-time reads run here, bounded like the readiness checks: a hung broker costs a thread.
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="metrics")


class Metrics:
    """One registry per app (not prometheus_client's global one): tests build many apps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by route template, method and status (this process).",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.token_failures = Counter(
            "gateway_token_failures",
            "Session token verification failures by contract code (this process).",
            ["code"],
            registry=self.registry,
        )
        self.webhook_events = Gauge(
            "gateway_webhook_events",
            "Webhook events in the ledger by status.",
            ["status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth",
            "Messages waiting on the broker's queue.",
            ["queue"],
            registry=self.registry,
        )
        # The labelled child of each (route, method, status) seen, so a request costs one dict
        # lookup and an increment, not prometheus_client's label validation and locked lookup.
        # Bounded: route templates x methods x statuses.
        self._request_children: dict[tuple[str, str, int], Any] = {}

    def count_request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(route, method, str(status))
            self._request_children[key] = child
        child.inc()


def init_app(app: Flask) -> None:
    metrics = app.extensions["metrics"] = Metrics()

    @app.after_request
    def count_request(response: Response) -> Response:
        # One proxy lookup for the request's several reads.
        req = request._get_current_object()  # type: ignore[attr-defined]
        # The route template, never the path: the by-email admin path carries an email.
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"
        # Any token is a method to HTTP: a client must not be able to mint new series at will.
        method = req.method if req.method in _METHODS else "other"
        metrics.count_request(route, method, response.status_code)
        code = g.get("problem_code")
        if code is not None and is_token_failure(code):
            metrics.token_failures.labels(code).inc()
        return response

    app.register_blueprint(bp)


def is_token_failure(code: str) -> bool:
    cls = Problem.registry.get(code)
    return cls is not None and issubclass(cls, TokenProblem | JwkRemoteFailedToLoad)


@bp.get("/metrics")
@public
def metrics_view() -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    metrics: Metrics = app.extensions["metrics"]
    timeout = app.config["GATEWAY"].readiness_timeout_seconds
    events = _executor.submit(webhook_event_counts, app)
    depth = _executor.submit(queue_depth, app)
    _set_gauge(metrics.webhook_events, lambda: events.result(timeout), "webhook events")
    _set_gauge(metrics.queue_depth, lambda: {QUEUE: depth.result(timeout)}, "queue depth")
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)


def _set_gauge(gauge: Gauge, read: Any, name: str) -> None:
    gauge.clear()  # a failed read shows no sample rather than a stale one
    try:
        values = read()
    except Exception as exc:  # noqa: BLE001 - a scrape never fails for one source
        log.warning("metrics: %s unavailable: %s", name, type(exc).__name__)
        return
    for label, value in values.items():
        gauge.labels(label).set(value)


def webhook_event_counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        try:
            rows = db.session.execute(
                select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
            ).all()
        finally:
            db.session.remove()
    return {str(status): int(count) for status, count in rows}


def queue_depth(app: Flask) -> int:
    with broker_connection(app) as conn:
        if conn.transport.driver_type == "redis":
            return int(conn.default_channel.client.llen(QUEUE))
        # Virtual transports (the embedded filesystem broker) count their own messages.
        return int(conn.default_channel.queue_declare(queue=QUEUE, passive=True).message_count)
