"""GET /admin/queues (CONTRACT 4.6): what an operator looks at first.

Each part is read on its own, bounded: a broker that does not answer makes `broker` "error" and
`queue_depth` null, never a slow or failed page. The last sweep's time is kept on the broker
(workers and web dynos share no disk on Heroku), or in the instance folder with the embedded one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask

from gateway.health import broker_connection
from gateway.metrics import ledger_state, queue_depth, waited_seconds
from gateway.models.base import isoformat, utcnow

log = logging.getLogger(__name__)
LAST_SWEEP_KEY = "clerk-gateway:last-sweep-at"
PING_TIMEOUT_SECONDS = 1.0
_executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="queues")


def queues_overview(app: Flask) -> dict[str, Any]:
    timeout = app.config["GATEWAY"].readiness_timeout_seconds
    depth = _executor.submit(queue_depth, app)
    workers = _executor.submit(answering_workers, app)
    sweep = _executor.submit(last_sweep_at, app)
    counts, oldest = ledger_state(app)
    broker_ok, depth_value = True, None
    try:
        depth_value = depth.result(timeout)
    except Exception as exc:  # noqa: BLE001 - any broker fault is "error" on this page
        log.warning("queues: broker unavailable: %s", type(exc).__name__)
        broker_ok = False
    return {
        "broker": "ok" if broker_ok else "error",
        "queue_depth": depth_value,
        "events": counts,
        "oldest_waiting_seconds": None if oldest is None else round(waited_seconds(oldest), 3),
        "last_sweep_at": _quietly(sweep, timeout) if broker_ok else None,
        "workers": (_quietly(workers, timeout + PING_TIMEOUT_SECONDS) or []) if broker_ok else [],
    }


def answering_workers(app: Flask) -> list[str]:
    """Names of the workers that answered a ping within a second."""
    replies = app.extensions["celery"].control.ping(timeout=PING_TIMEOUT_SECONDS)
    return sorted(name for reply in replies for name in reply)


def record_sweep(app: Flask, when: datetime | None = None) -> None:
    """Called by the beat sweep task once it ran; read back by last_sweep_at."""
    stamp = isoformat(when or utcnow()) or ""
    with broker_connection(app) as conn:
        if conn.transport.driver_type == "redis":
            conn.default_channel.client.set(LAST_SWEEP_KEY, stamp)
        else:
            _sweep_file(app).write_text(stamp)


def last_sweep_at(app: Flask) -> str | None:
    with broker_connection(app) as conn:
        if conn.transport.driver_type == "redis":
            value = conn.default_channel.client.get(LAST_SWEEP_KEY)
            return value.decode() if value else None
    path = _sweep_file(app)
    return path.read_text() if path.exists() else None


def _sweep_file(app: Flask) -> Path:
    return Path(app.config["GATEWAY"].instance_path) / "last-sweep-at"


def _quietly(future: Any, timeout: float) -> Any:
    try:
        return future.result(timeout)
    except Exception as exc:  # noqa: BLE001 - one missing part never fails the page
        log.warning("queues: part unavailable: %s", type(exc).__name__)
        return None
