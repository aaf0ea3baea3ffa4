"""Periodic and operational tasks."""

from __future__ import annotations

from celery import shared_task
from flask import current_app
from sqlalchemy import text

from gateway.extensions import db
from gateway.jobs import SWEEP_WEBHOOK_EVENTS
from gateway.webhooks.sweep import sweep_now


@shared_task(name="worker.maintenance.ping", ignore_result=False)
def ping(marker: str) -> dict[str, str]:
    """Round-trip check: proves a task runs inside an app context with a working db.session."""
    db.session.execute(text("SELECT 1"))
    return {"marker": marker, "app": current_app.name}


@shared_task(name=SWEEP_WEBHOOK_EVENTS)
def sweep_webhook_events() -> dict[str, int]:
    """Beat runs this every WEBHOOK_SWEEP_SECONDS: re-enqueue events still waiting."""
    result = sweep_now(current_app._get_current_object())  # type: ignore[attr-defined]
    return {"reclaimed": result.reclaimed, "found": result.found, "enqueued": result.enqueued}
