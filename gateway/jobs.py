"""The web side of Celery: the Celery instance bound to the app, and enqueueing by task name.

The gateway never imports worker code (imports go worker -> gateway); it names tasks by string.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import kombu.exceptions
from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask

from gateway.config import Config, ssl_cert_reqs_for
from gateway.extensions import DATABASE_DOWN_ERRORS

log = logging.getLogger(__name__)

# Worth a task's retry: the database or the broker did not answer. Anything else is a fact about
# the work (a bad event, a refused request) that retrying cannot change.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *DATABASE_DOWN_ERRORS,
    kombu.exceptions.OperationalError,
)

# Claims and applies waiting webhook events in batches; takes no arguments (any run drains any
# event), so one message can stand for many events and a lost one is replaced by any other.
APPLY_WEBHOOK_EVENTS = "worker.webhooks.apply_webhook_events"
# The name of the per-event task before batches; still registered so that messages published by
# an older release drain too.
PROCESS_WEBHOOK_EVENT = "worker.webhooks.process_webhook_event"
SWEEP_WEBHOOK_EVENTS = "worker.maintenance.sweep_webhook_events"
PRUNE_OLD_RECORDS = "worker.maintenance.prune_old_records"
ENSURE_STRIPE_CUSTOMER = "worker.billing.ensure_stripe_customer"
# Email or name changed: push them to the customer (creates one when missing).
PUSH_CUSTOMER_CHANGES = "worker.billing.push_customer_changes"
# A Clerk user was deleted: keep its Stripe customer, mark it in its metadata (CONTRACT 4.5).
MARK_CUSTOMER_DELETED = "worker.billing.mark_customer_deleted"
PING = "worker.maintenance.ping"
# The one queue every task goes to (the Procfile's worker consumes it: --queues=gateway).
QUEUE = "gateway"

# The apply task's time limits: soft (SoftTimeLimitExceeded in the task), then hard (the pool
# kills the child). A claim is a lease derived from the hard limit: a live worker never holds a
# claim longer than its task may run, so an older claim is a dead worker's (SIGKILL, OOM, lost
# host) and its events are claimed again, well within a minute instead of the broker's hour.
APPLY_SOFT_TIME_LIMIT_SECONDS = 20
APPLY_TIME_LIMIT_SECONDS = 25
CLAIM_LEASE_SECONDS = APPLY_TIME_LIMIT_SECONDS + 5

# The broker redelivers an unacknowledged message after this long (acks_late); task retries and
# backoff are kept well below it so a slow retry is never mistaken for a lost worker.
VISIBILITY_TIMEOUT_SECONDS = 3600


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def broker_settings(config: Config) -> dict[str, Any]:
    if config.embedded_broker:
        # kombu's filesystem transport: web, worker and beat are separate processes sharing a
        # folder, with no server to install. For local runs only. Every folder it writes lives
        # under instance/: its control folder (remote control, Flower) defaults to ./control.
        root = Path(config.instance_path) / "broker"
        for sub in ("queue", "processed", "control"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return {
            "broker_url": "filesystem://",
            "broker_transport_options": {
                "data_folder_in": str(root / "queue"),
                "data_folder_out": str(root / "queue"),
                "processed_folder": str(root / "processed"),
                "control_folder": str(root / "control"),
                "store_processed": False,
            },
        }
    timeout = config.broker_publish_timeout_seconds
    return {
        "broker_url": strip_ssl_cert_reqs(config.broker_url),
        # Explicit for rediss://: kombu would otherwise connect without any certificate check.
        "broker_use_ssl": _ssl_options(config.broker_ssl_cert_reqs),
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            # Bounded socket waits: a stopped-but-open Redis must not hang a request or a worker.
            "socket_timeout": max(timeout, 5.0),
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
    }


def result_backend_settings(config: Config) -> dict[str, Any]:
    """Off unless CELERY_RESULT_BACKEND is set; rediss:// checks certificates as the broker does."""
    url = config.result_backend
    reqs = ssl_cert_reqs_for(url, config.redis_ssl_cert_reqs)
    settings: dict[str, Any] = {"result_backend": strip_ssl_cert_reqs(url) if url else None}
    if reqs is not None:
        settings["redis_backend_use_ssl"] = _ssl_options(reqs)
    return settings


def strip_ssl_cert_reqs(url: str) -> str:
    """The URL without ssl_cert_reqs: it is passed as broker_use_ssl, and only there."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ssl_cert_reqs"
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _ssl_options(cert_reqs: str | None) -> dict[str, Any] | None:
    return None if cert_reqs is None else {"ssl_cert_reqs": _CERT_REQS[cert_reqs]}


class AppContextTask(Task):  # type: ignore[misc]
    """Every task runs inside its own app context, so each gets its own db.session."""

    abstract = True
    flask_app: Flask

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.flask_app.app_context():
            return self.run(*args, **kwargs)


def celery_init_app(app: Flask, config: Config) -> Celery:
    celery = Celery(app.import_name, task_cls=AppContextTask)
    celery.conf.update(
        broker_settings(config) | result_backend_settings(config),
        task_ignore_result=True,
        result_expires=600,
        # Task events for Flower and Celery exporters: workers report started/succeeded/failed,
        # publishers report sent. Arguments are ids only (see enqueue), so no personal data shows.
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule_filename=config.beat_schedule_path,
        task_serializer="json",
        accept_content=["json"],
        # At-least-once: ack after the task ran; a worker killed mid-task gives the message back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Heroku (and honcho) send SIGTERM to every process of the dyno, pool children included.
        # The Procfile sets REMAP_SIGTERM=SIGQUIT so children ignore it and the main process runs a
        # soft shutdown: running tasks get this long to finish, then are cancelled and, being
        # acks_late, go back to the queue. Below Heroku's 30 s grace before SIGKILL.
        worker_soft_shutdown_timeout=10.0,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        timezone="UTC",
        imports=("worker.webhooks", "worker.billing", "worker.maintenance"),
        beat_schedule={
            "sweep-webhook-events": {
                "task": SWEEP_WEBHOOK_EVENTS,
                "schedule": float(config.webhook_sweep_seconds),
            },
            # A time of day, not "every 24 h": Heroku restarts dynos daily and beat's schedule
            # file does not survive, so an interval could be pushed back forever.
            "prune-old-records": {
                "task": PRUNE_OLD_RECORDS,
                "schedule": crontab(minute=17, hour=3),
            },
        },
    )
    celery.Task.flask_app = app  # type: ignore[attr-defined]
    app.extensions["celery"] = celery
    app.extensions["celery_publisher"] = _Publisher()
    return celery


class _Publisher:
    """Publishes on a few background threads and waits a bounded time for each.

    kombu and redis-py retry connection errors internally (seconds, not milliseconds), and a
    stopped-but-open Redis can hold a socket until its timeout: neither may hold a request. A
    publish that overruns is left to finish or fail on its own thread; while the broker is known to
    be down (recent failure, or every thread busy) we fail fast and let the sweep catch up.
    """

    MAX_IN_FLIGHT = 4
    DOWN_BACKOFF_SECONDS = 2.0

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(self.MAX_IN_FLIGHT, thread_name_prefix="publish")
        self._slots = threading.BoundedSemaphore(self.MAX_IN_FLIGHT)
        self._down_until = 0.0

    def publish(
        self, celery: Celery, task_name: str, args: tuple[Any, ...], timeout: float
    ) -> bool:
        started = time.monotonic()
        if started < self._down_until:
            return False
        # Wait for a slot within the same bound: under a burst of concurrent requests the slots
        # free up in milliseconds, and failing fast here would leave healthy events to the sweep.
        if not self._slots.acquire(timeout=timeout):
            self._mark_down()  # every slot held by a publish for a whole timeout: broker hung
            return False
        future = self._executor.submit(self._send, celery, task_name, args)
        try:
            future.result(timeout=max(0.05, timeout - (time.monotonic() - started)))
        except FutureTimeout:
            self._mark_down()
            log.warning("enqueue of %s timed out after %.1fs", task_name, timeout)
            return False
        except Exception as exc:  # noqa: BLE001 - any broker fault means "not queued", never a 500
            self._mark_down()
            log.warning("enqueue of %s failed: %s", task_name, type(exc).__name__)
            return False
        return True

    def _send(self, celery: Celery, task_name: str, args: tuple[Any, ...]) -> None:
        try:
            celery.send_task(task_name, args=args, retry=False, ignore_result=True)
        finally:
            self._slots.release()

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.DOWN_BACKOFF_SECONDS


def enqueue(app: Flask, task_name: str, *args: Any) -> bool:
    """Publish a task by name; never raise, never block past the publish timeout.

    Returns False when the broker did not take it in time; the caller's row stays waiting and the
    periodic sweep publishes it later. Arguments are ids only: Flower shows them to operators.
    """
    publisher: _Publisher = app.extensions["celery_publisher"]
    timeout = app.config["GATEWAY"].broker_publish_timeout_seconds
    return publisher.publish(app.extensions["celery"], task_name, args, timeout)
