"""Liveness and readiness. Readiness checks are bounded in time: a hung dependency is a 503."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from gateway.auth.public import public
from gateway.extensions import db

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

# Checks run on a small pool so a hung socket costs a thread, never the request.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def check_database(app: Flask) -> None:
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.remove()


@contextmanager
def broker_connection(app: Flask) -> Iterator[Any]:
    """A connection to the broker that gives up after one retry (also used by /metrics)."""
    with app.extensions["celery"].connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
        yield conn


def check_broker(app: Flask) -> None:
    with broker_connection(app) as conn:
        if conn.transport.driver_type == "redis":
            conn.default_channel.client.ping()


def run_checks(app: Flask, timeout: float) -> dict[str, str]:
    futures = {
        "database": _executor.submit(check_database, app),
        "broker": _executor.submit(check_broker, app),
    }
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            results[name] = "ok"
        except FutureTimeout:
            log.warning("readiness check %s timed out", name)
            results[name] = "error"
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready"
            log.warning("readiness check %s failed: %s", name, type(exc).__name__)
            results[name] = "error"
    return results


@bp.get("/healthz")
@public
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
@public
def readyz() -> Any:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    checks = run_checks(app, app.config["GATEWAY"].readiness_timeout_seconds)
    ok = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if ok else "error", checks=checks), 200 if ok else 503
