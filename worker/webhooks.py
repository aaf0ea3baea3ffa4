"""Webhook tasks: thin shims over gateway.webhooks.processing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_ready
from flask import Flask, current_app

from gateway.extensions import db
from gateway.jobs import (
    APPLY_SOFT_TIME_LIMIT_SECONDS,
    APPLY_TIME_LIMIT_SECONDS,
    APPLY_WEBHOOK_EVENTS,
    CLAIM_LEASE_SECONDS,
    PROCESS_WEBHOOK_EVENT,
    TRANSIENT_ERRORS,
    enqueue,
)
from gateway.webhooks.processing import drain
from worker.backoff import backoff_seconds

log = logging.getLogger(__name__)
MAX_RETRIES = 5


# Ceilings of 2, 4, 8, 16, 32 s over MAX_RETRIES: about a minute in all, so a retry waiting in a
# worker never nears the broker's 1 h visibility timeout.
BACKOFF_CAP_SECONDS = 32.0


@shared_task(
    bind=True,
    name=APPLY_WEBHOOK_EVENTS,
    max_retries=MAX_RETRIES,
    soft_time_limit=APPLY_SOFT_TIME_LIMIT_SECONDS,
    time_limit=APPLY_TIME_LIMIT_SECONDS,
)
def apply_webhook_events(self: Task) -> dict[str, Any]:
    """Claim and apply waiting events in batches until none is left (or the time budget is)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    fanned_out = False

    def after_commit(follow_ups: Sequence[tuple[str, int]]) -> None:
        # The follow-ups (Stripe) only after the commit: they must find the rows as applied.
        for task_name, argument in follow_ups:
            enqueue(app, task_name, argument)

    def claimed_full_batch() -> None:
        nonlocal fanned_out
        if not fanned_out:
            # A backlog: wake one more worker, which does the same, until every worker drains.
            fanned_out = enqueue(app, APPLY_WEBHOOK_EVENTS)

    try:
        result = drain(
            db.session(),
            app.config["GATEWAY"],
            after_commit,
            on_full_batch=claimed_full_batch,
        )
    except TRANSIENT_ERRORS as exc:
        db.session.rollback()
        if self.request.retries >= (self.max_retries or 0):
            # The claims were given back, or expire with their lease: the sweep wakes a worker.
            return {"status": "gave_up", "error": type(exc).__name__}
        countdown = backoff_seconds(self.request.retries, BACKOFF_CAP_SECONDS)
        raise self.retry(exc=exc, countdown=countdown) from None
    if result.more:
        enqueue(app, APPLY_WEBHOOK_EVENTS)  # a fresh message: other tasks get their turn
    return {"applied": result.statuses, "exhausted": result.exhausted, "more": result.more}


@shared_task(name=PROCESS_WEBHOOK_EVENT)
def process_webhook_event(event_id: int) -> None:
    """A message of the release before batches (one per event): wake the batch task instead."""
    enqueue(current_app._get_current_object(), APPLY_WEBHOOK_EVENTS)  # type: ignore[attr-defined]


@worker_ready.connect
def _drain_after_start(sender: Any = None, **_: Any) -> None:
    """A worker that starts (or restarts after a crash) wakes itself now, and again once the
    claims a dead predecessor may have held have expired: with no message left in the queue
    those events would otherwise wait for the sweep. The second wake-up is a timer here, not a
    countdown message, which a worker would hold unacknowledged in the broker meanwhile."""
    app = sender.app

    def wake() -> None:
        try:
            app.send_task(APPLY_WEBHOOK_EVENTS, retry=False)
        except Exception as exc:  # noqa: BLE001 - the beat sweep covers it; never stop a worker
            log.warning("could not wake webhook apply after start: %s", type(exc).__name__)

    wake()
    timer = threading.Timer(CLAIM_LEASE_SECONDS + 1, wake)
    timer.daemon = True
    timer.start()
