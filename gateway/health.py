"""Liveness and readiness. Readiness checks are bounded in time: a hung dependency is a 503."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from gateway.auth.public import public
from gateway.extensions import db

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

# A check result is reused this long: a burst of probes (or a scrape storm) costs one check.
CHECK_CACHE_SECONDS = 1.0
T = TypeVar("T")


class CachedCheck(Generic[T]):
    """One run of `check` at a time per process, on its own thread, its result reused briefly.

    Callers wait for the run in flight (at most `timeout`) instead of starting their own: while a
    dependency hangs, every probe waits on the same stuck thread and answers 503 in time, where a
    pool would queue one more hung check per probe, without bound.
    """

    def __init__(
        self,
        check: Callable[[], T],
        ttl_seconds: float = CHECK_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._running: Future[T] | None = None
        self._done: Future[T] | None = None
        self._done_until = 0.0

    def result(self, timeout: float) -> T:
        """The check's value; raises its exception, or TimeoutError after `timeout` seconds."""
        return self.future().result(timeout)

    def future(self) -> Future[T]:
        """The fresh result, else the run in flight, else a new run."""
        with self._lock:
            if self._done is not None and self._clock() < self._done_until:
                return self._done
            if self._running is None:
                self._running = Future()
                threading.Thread(
                    target=self._run, args=(self._running,), name="health-check", daemon=True
                ).start()
            return self._running

    def _run(self, future: Future[T]) -> None:
        error: BaseException | None = None
        try:
            value = self._check()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            error = exc
        # The state first, then the waiters: a waiter that returns sees its run as the cached one.
        with self._lock:
            self._running = None
            self._done, self._done_until = future, self._clock() + self._ttl
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


class ProcessChecks:
    """The CachedChecks of one app in this process (rebuilt after fork: threads do not survive)."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._checks: dict[str, CachedCheck[Any]] = {}

    def get(self, name: str, check: Callable[[Flask], Any]) -> CachedCheck[Any]:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._checks = os.getpid(), {}
            if name not in self._checks:
                app = self._app
                self._checks[name] = CachedCheck(lambda: check(app))
            return self._checks[name]


def cached_check(app: Flask, name: str, check: Callable[[Flask], T]) -> CachedCheck[T]:
    checks = app.extensions.get("health_checks")
    if checks is None:
        checks = app.extensions.setdefault("health_checks", ProcessChecks(app))
    return checks.get(name, check)


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
    futures = {  # both run at once, each on its own bounded thread
        "database": cached_check(app, "database", check_database).future(),
        "broker": cached_check(app, "broker", check_broker).future(),
    }
    results: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    for name, future in futures.items():
        try:
            future.result(timeout=max(deadline - time.monotonic(), 0.0))
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
