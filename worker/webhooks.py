"""Webhook tasks: thin shims over gateway.webhooks.processing."""

from __future__ import annotations

import random

from celery import Task, shared_task
from flask import current_app

from gateway.extensions import db
from gateway.jobs import PROCESS_WEBHOOK_EVENT, enqueue
from gateway.webhooks.processing import (
    TRANSIENT_ERRORS,
    stripe_follow_ups,
)
from gateway.webhooks.processing import (
    process_webhook_event as apply_event,
)

MAX_RETRIES = 5


def retry_countdown(retries: int) -> float:
    """Exponential backoff with full jitter: 2, 4, 8, 16, 32 s caps, at most about a minute in
    all, so a retry waiting in a worker never nears the broker's 1 h visibility timeout."""
    return random.uniform(1.0, 2.0 ** (retries + 1))


@shared_task(bind=True, name=PROCESS_WEBHOOK_EVENT, max_retries=MAX_RETRIES)
def process_webhook_event(self: Task, event_id: int) -> str | None:
    final = self.request.retries >= self.max_retries
    try:
        outcome = apply_event(db.session(), int(event_id), final_attempt=final)
    except TRANSIENT_ERRORS as exc:
        db.session.rollback()
        if final:
            return "failed"  # marked failed, or the sweep retries it once the database is back
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    stripe_enabled = bool(app.config["GATEWAY"].stripe_api_key)
    # After the commit: the billing task must find the user row as this event left it.
    for task_name, user_id in stripe_follow_ups(outcome, stripe_enabled):
        enqueue(app, task_name, user_id)
    return outcome.status
