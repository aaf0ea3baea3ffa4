"""The sweep: the safety net behind the receiver's hand-off to the broker.

Beat runs it every WEBHOOK_SWEEP_SECONDS (`flask webhooks requeue` runs it now). Any run of the
apply task drains any waiting event, so the sweep never republishes events one by one: when
events have waited longer than they should (the broker was down at receipt, a wake-up was lost
with a killed worker or a Redis restarted without its data), it publishes one wake-up. During a
backlog, when the waiting is only the queue being long, that adds one message per interval, not
one per waiting event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.extensions import db
from gateway.jobs import APPLY_WEBHOOK_EVENTS, CLAIM_LEASE_SECONDS, enqueue
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow
from gateway.webhooks.service import mark_queued

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    reclaimed: int  # claims older than the claim TTL, given back (their worker is dead)
    found: int  # events waiting longer than `older_than_seconds`
    enqueued: int  # of those, covered by a wake-up the broker took (0 when it is down)


def sweep_webhook_events(
    session: Session,
    wake: Callable[[], bool],
    older_than_seconds: float,
    claim_ttl_seconds: float = CLAIM_LEASE_SECONDS,
    now: datetime | None = None,
) -> SweepResult:
    """Give back claims older than `claim_ttl_seconds` and wake a worker for events waiting longer
    than `older_than_seconds`. The apply task claims expired leases by itself; resetting them here
    too shows them as waiting, and `--claim-ttl 0` lets an operator skip the lease after a crash
    they know of (a live worker that loses its claim this way applies nothing)."""
    now = now or utcnow()
    reclaimed = session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.status == EventStatus.PROCESSING,
            WebhookEvent.claimed_at < now - timedelta(seconds=claim_ttl_seconds),
        )
        .values(status=EventStatus.RECEIVED.value, claimed_at=None)
        .returning(WebhookEvent.id)
    ).all()
    session.commit()
    cutoff = now - timedelta(seconds=older_than_seconds)
    waiting = session.execute(
        select(WebhookEvent.id, WebhookEvent.status).where(
            WebhookEvent.status.in_(EventStatus.waiting()),
            func.coalesce(WebhookEvent.queued_at, WebhookEvent.received_at) < cutoff,
        )
    ).all()
    session.rollback()
    found = len(waiting) + len(reclaimed)
    enqueued = 0
    if found and wake():
        enqueued = found
        mark_queued(
            session,
            [row.id for row in waiting if row.status == EventStatus.RECEIVED]
            + [row.id for row in reclaimed],
        )
    if found:
        log.info(
            "webhook sweep: %d waiting, %d reclaimed, wake-up %s",
            found,
            len(reclaimed),
            "published" if enqueued else "not published (broker down)",
        )
    return SweepResult(reclaimed=len(reclaimed), found=found, enqueued=enqueued)


def sweep_now(
    app: Flask, older_than_seconds: float | None = None, claim_ttl_seconds: float | None = None
) -> SweepResult:
    config = app.config["GATEWAY"]
    return sweep_webhook_events(
        db.session(),
        lambda: enqueue(app, APPLY_WEBHOOK_EVENTS),
        older_than_seconds=(
            config.webhook_sweep_seconds if older_than_seconds is None else older_than_seconds
        ),
        claim_ttl_seconds=CLAIM_LEASE_SECONDS if claim_ttl_seconds is None else claim_ttl_seconds,
    )
