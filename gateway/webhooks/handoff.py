"""The receiver's hand-off to the broker: off the request path, one wake-up for many events.

The acknowledgement is durable once its row is committed; publishing is only a wake-up for the
workers, who claim waiting events from the table themselves. So the request thread only notes the
event id (microseconds) and one thread per process publishes one `apply_webhook_events` message
per flush, then marks the flushed events `queued`. A publish or a mark that fails leaves the rows
`received`, and the sweep wakes a worker for them: the request never waits for the broker, whether
it is fast, slow or down.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from flask import Flask

from gateway.extensions import db
from gateway.jobs import APPLY_WEBHOOK_EVENTS, enqueue
from gateway.webhooks.service import mark_queued

log = logging.getLogger(__name__)
EXTENSION_KEY = "webhook_handoff"


class WakeUps:
    """Collects committed event ids and publishes wake-ups for them on a background thread.

    A flush waits FLUSH_SECONDS after the first id so that a burst becomes one message (at most
    1 / FLUSH_SECONDS messages a second per process, however many events arrive). Past
    MAX_PENDING ids (the thread is stuck on a hung broker) new ids are not kept: their rows are
    durable and the sweep finds them.
    """

    FLUSH_SECONDS = 0.05
    MAX_PENDING = 10_000

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[int] = []
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self.published = 0
        self.dropped = 0

    def notify(self, event_id: int) -> None:
        with self._lock:
            self._ensure_thread()
            if len(self._pending) >= self.MAX_PENDING:
                self.dropped += 1
                return
            self._pending.append(event_id)
        self._wake.set()

    def flush(self) -> None:
        """Publish what is pending now, on the calling thread (tests, and at exit)."""
        with self._lock:
            ids, self._pending = self._pending, []
        if ids:
            self._publish(ids)

    def _ensure_thread(self) -> None:
        # Called with the lock held. A new thread after fork (threads do not survive it); ids
        # copied from the parent are the parent's to publish.
        pid = os.getpid()
        if self._pid == pid and self._thread is not None and self._thread.is_alive():
            return
        if self._pid != pid:
            self._pending = []
            self._wake = threading.Event()
            atexit.register(self.flush)
        self._pid = pid
        self._thread = threading.Thread(target=self._run, name="webhook-handoff", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.FLUSH_SECONDS)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the thread must survive anything; the rows are durable
                log.exception("webhook hand-off failed; the sweep will wake a worker")

    def _publish(self, ids: list[int]) -> None:
        with self._app.app_context():
            if not enqueue(self._app, APPLY_WEBHOOK_EVENTS):
                return  # enqueue logged it; the rows stay `received` for the sweep
            self.published += len(ids)
            try:
                mark_queued(db.session(), ids)
            except Exception as exc:  # noqa: BLE001 - only a label: the wake-up is out
                db.session.rollback()
                log.warning("could not mark webhook events queued: %s", type(exc).__name__)
            finally:
                db.session.remove()


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = WakeUps(app)


def wake_ups(app: Flask) -> WakeUps:
    handoff: WakeUps = app.extensions[EXTENSION_KEY]
    return handoff


def publish_event(app: Flask, event_id: int) -> bool:
    """Wake a worker for one event now and mark it queued; False when the broker did not take it
    (the row waits for the sweep). For operators (replay), who want to know; never in a request
    that acknowledges a delivery."""
    if not enqueue(app, APPLY_WEBHOOK_EVENTS):
        return False
    try:
        mark_queued(db.session(), [event_id])
    except Exception as exc:  # noqa: BLE001 - the event is durable and a worker is woken
        db.session.rollback()
        log.warning("could not mark webhook event queued: %s", type(exc).__name__)
    return True
