"""Periodic and operational tasks."""

from __future__ import annotations

from celery import shared_task
from flask import current_app
from sqlalchemy import text

from gateway.extensions import db


@shared_task(name="worker.maintenance.ping", ignore_result=False)
def ping(marker: str) -> dict[str, str]:
    """Round-trip check: proves a task runs inside an app context with a working db.session."""
    db.session.execute(text("SELECT 1"))
    return {"marker": marker, "app": current_app.name}
