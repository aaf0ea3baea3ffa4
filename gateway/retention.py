"""Retention: delete old webhook events and guard_requests rows in batches (CONTRACT 2).

Run daily by beat (worker.maintenance.prune_old_records) and on demand by `flask prune`. Events
that are `failed` are never deleted: they wait for an operator. Events still on their way
(received, queued, processing) are never deleted either, whatever their age.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.models import EventStatus, GuardRequest, WebhookEvent
from gateway.models.base import utcnow

# Settled events: applied, or never applicable. `failed` is deliberately absent.
PRUNABLE_STATUSES = (
    EventStatus.PROCESSED.value,
    EventStatus.IGNORED.value,
    EventStatus.INVALID.value,
)
# One transaction per batch: a short lock footprint, and an interrupted run keeps what it did.
BATCH_SIZE = 1000


@dataclass(frozen=True)
class PruneResult:
    webhook_events: int
    guard_requests: int
    dry_run: bool

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"prune: {verb} {self.webhook_events} webhook event(s) and "
            f"{self.guard_requests} guard_requests row(s)"
        )


@dataclass(frozen=True)
class _Target:
    name: str
    model: Any
    condition: Any


def prune_old_records(
    session: Session,
    config: Config,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[str, int], None] | None = None,
) -> PruneResult:
    """Delete what is past retention, `batch_size` rows per transaction; or only count it."""
    now = now or utcnow()
    event_cutoff = now - timedelta(days=config.webhook_retention_days)
    audit_cutoff = now - timedelta(days=config.guard_audit_retention_days)
    targets = [
        _Target(
            "webhook_events",
            WebhookEvent,
            WebhookEvent.status.in_(PRUNABLE_STATUSES) & (WebhookEvent.received_at < event_cutoff),
        ),
        _Target("guard_requests", GuardRequest, GuardRequest.created_at < audit_cutoff),
    ]
    counts = {}
    for target in targets:
        if dry_run:
            counts[target.name] = int(
                session.scalar(
                    select(func.count()).select_from(target.model).where(target.condition)
                )
                or 0
            )
            continue
        counts[target.name] = _delete_in_batches(session, target, batch_size, progress)
    return PruneResult(counts["webhook_events"], counts["guard_requests"], dry_run)


def _delete_in_batches(
    session: Session,
    target: _Target,
    batch_size: int,
    progress: Callable[[str, int], None] | None,
) -> int:
    deleted = 0
    while True:
        ids = select(target.model.id).where(target.condition).order_by(target.model.id)
        batch = list(session.scalars(ids.limit(batch_size)))
        if not batch:
            return deleted
        session.execute(delete(target.model).where(target.model.id.in_(batch)))
        session.commit()
        deleted += len(batch)
        if progress is not None:
            progress(target.name, len(batch))
