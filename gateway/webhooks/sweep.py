"""The sweep with the app's own enqueue: shared by the beat task and `flask webhooks requeue`."""

from __future__ import annotations

from flask import Flask

from gateway.extensions import db
from gateway.jobs import PROCESS_WEBHOOK_EVENT, enqueue
from gateway.webhooks.service import CLAIM_TTL_SECONDS, SweepResult, sweep_webhook_events


def sweep_now(
    app: Flask, older_than_seconds: float | None = None, claim_ttl_seconds: float | None = None
) -> SweepResult:
    config = app.config["GATEWAY"]
    return sweep_webhook_events(
        db.session(),
        lambda event_id: enqueue(app, PROCESS_WEBHOOK_EVENT, event_id),
        older_than_seconds=(
            config.webhook_sweep_seconds if older_than_seconds is None else older_than_seconds
        ),
        claim_ttl_seconds=CLAIM_TTL_SECONDS if claim_ttl_seconds is None else claim_ttl_seconds,
    )
