"""Periodic and operational tasks."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app
from sqlalchemy import text

from gateway.billing.follow_ups import sweep_users_without_customer
from gateway.extensions import db
from gateway.jobs import PRUNE_OLD_RECORDS, SWEEP_WEBHOOK_EVENTS, enqueue
from gateway.retention import prune_old_records as prune
from gateway.webhooks.queues import record_sweep
from gateway.webhooks.sweep import sweep_now

log = logging.getLogger(__name__)


@shared_task(name="worker.maintenance.ping", ignore_result=False)
def ping(marker: str) -> dict[str, str]:
    """Round-trip check: proves a task runs inside an app context with a working db.session."""
    db.session.execute(text("SELECT 1"))
    return {"marker": marker, "app": current_app.name}


@shared_task(name=SWEEP_WEBHOOK_EVENTS)
def sweep_webhook_events() -> dict[str, int]:
    """Beat runs this every WEBHOOK_SWEEP_SECONDS: re-enqueue events still waiting, and the
    Stripe job of users still without a customer (a follow-up that was never sent)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    result = sweep_now(app)
    try:
        record_sweep(app)  # shown by GET /admin/queues
    except Exception as exc:  # noqa: BLE001 - the sweep itself succeeded; only its clock did not
        log.warning("could not record the sweep time: %s", type(exc).__name__)
    stripe_jobs = sweep_users_without_customer(
        db.session(), lambda task, user_id: enqueue(app, task, user_id), app.config["GATEWAY"]
    )
    return {
        "reclaimed": result.reclaimed,
        "found": result.found,
        "enqueued": result.enqueued,
        "stripe_follow_ups": stripe_jobs,
    }


@shared_task(name=PRUNE_OLD_RECORDS)
def prune_old_records() -> dict[str, int]:
    """Beat runs this daily: webhook events and guard_requests past retention, in batches."""
    result = prune(db.session(), current_app.config["GATEWAY"])
    log.info(result.summary())
    return {"webhook_events": result.webhook_events, "guard_requests": result.guard_requests}
