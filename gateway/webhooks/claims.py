"""Claims on stored webhook events: leases, per-key ordering, tiers for events tried before.

The why of claims (one advisory lock, no SKIP LOCKED, leases) is in gateway/webhooks/processing.py,
which claims a batch here, applies it, and gives back what it could not apply."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from gateway.jobs import CLAIM_LEASE_SECONDS, TRANSIENT_ERRORS
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow
from gateway.users.service import advisory_xact_lock
from gateway.webhooks.events import StoredEvent

EVENTS: Table = WebhookEvent.__table__  # type: ignore[assignment]  # declared, so a Table
_held = EVENTS.alias("held")  # the same table, for "does a live claim hold this key?"
log = logging.getLogger(__name__)


CLAIM_LOCK = "webhook-events-claim"


ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class Claimed:
    event: StoredEvent
    attempt: int  # the row's `attempts` after this claim: the claim's token


def claim_batch(
    session: Session, *, limit: int, max_attempts: int, now: datetime | None = None
) -> tuple[list[Claimed], int]:
    """Take up to `limit` waiting events (and expired claims) whose key nobody holds.

    Returns the claims and how many events were failed instead, their attempts used up.

    Events claimed before and not finished (their worker died, or a transient fault) come back in
    small batches, then alone (_tier): an event that kills its worker every time uses up its own
    attempts, not those of a whole batch of innocent neighbours.
    """
    now = now or utcnow()
    claimable = _claimable(now)
    advisory_xact_lock(session, CLAIM_LOCK)
    rows = session.execute(
        select(EVENTS.c.id, EVENTS.c.attempts, EVENTS.c.ordering_key)
        .where(claimable)
        .order_by(EVENTS.c.id)
        .limit(limit)
        .with_for_update(of=EVENTS)
    ).all()
    exhausted: list[int] = []
    chosen: list[int] = []
    tier: int | None = None  # a batch holds events of one tier only (see _tier)
    blocked: set[str | None] = set()  # keys with an earlier event left out of this batch
    for row in rows:
        if row.attempts >= max_attempts:
            exhausted.append(row.id)
            continue
        if row.ordering_key in blocked:
            continue
        this = _tier(row.attempts)
        tier = this if tier is None else tier
        if this != tier or len(chosen) >= _TIER_LIMITS.get(tier, limit):
            blocked.add(row.ordering_key)
            continue
        chosen.append(row.id)
    if exhausted:
        session.execute(
            update(EVENTS)
            .where(EVENTS.c.id.in_(exhausted), claimable)
            .values(
                status=EventStatus.FAILED.value,
                last_error=ATTEMPTS_EXHAUSTED,
                claimed_at=None,
                processed_at=now,
            )
        )
        log.warning("webhook events failed after %d claims: %s", max_attempts, exhausted)
    claimed: list[Claimed] = []
    if chosen:
        # The same conditions again: on SQLite (no row locks) this UPDATE is what decides.
        returned = session.execute(
            update(EVENTS)
            .where(EVENTS.c.id.in_(chosen), claimable)
            .values(
                status=EventStatus.PROCESSING.value,
                attempts=EVENTS.c.attempts + 1,
                claimed_at=now,
            )
            .returning(
                EVENTS.c.id,
                EVENTS.c.svix_id,
                EVENTS.c.type,
                EVENTS.c.ordering_key,
                EVENTS.c.payload,
                EVENTS.c.attempts,
                EVENTS.c.source,
            )
        ).all()
        claimed = [_claimed(row) for row in sorted(returned, key=lambda r: r.id)]
    session.commit()
    return claimed, len(exhausted)


def release_claims(
    session: Session, claimed: Iterable[Claimed], error: str, *, failed: bool = False
) -> None:
    """Give events back (claimed again by the next run) or mark them failed. Best effort: when
    the database is down this fails too, and the events are claimed again once the lease ends."""
    values: dict[str, Any] = {"last_error": error, "claimed_at": None}
    if failed:
        values |= {"status": EventStatus.FAILED.value, "processed_at": utcnow()}
    else:
        values["status"] = EventStatus.RECEIVED.value
    params = [{"event_id": one.event.id, "attempt": one.attempt} for one in claimed]
    try:
        session.execute(
            update(EVENTS)
            .where(
                EVENTS.c.id == bindparam("event_id"),
                EVENTS.c.status == EventStatus.PROCESSING,
                EVENTS.c.attempts == bindparam("attempt"),
            )
            .values(**values),
            params,
        )
        session.commit()
    except TRANSIENT_ERRORS as exc:
        session.rollback()
        log.warning("could not release %d webhook events: %s", len(params), type(exc).__name__)


# Tier 0, never claimed: a full batch. Tier 1, claimed once (its batch died): up to 10 together.
# Tier 2, claimed twice or more: alone, so a poison event is cornered by its third claim.
_TIER_LIMITS = {1: 10, 2: 1}


def _tier(attempts: int) -> int:
    return min(attempts, 2)


def lease_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=CLAIM_LEASE_SECONDS)


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Waiting, or claimed by a worker whose lease ran out; and no live claim holds its key."""
    cutoff = lease_cutoff(now)
    key_held = exists().where(
        _held.c.ordering_key == EVENTS.c.ordering_key,
        _held.c.status == EventStatus.PROCESSING,
        _held.c.claimed_at >= cutoff,
        _held.c.id != EVENTS.c.id,
    )
    return and_(
        or_(
            EVENTS.c.status.in_(EventStatus.waiting()),
            and_(EVENTS.c.status == EventStatus.PROCESSING, EVENTS.c.claimed_at < cutoff),
        ),
        ~key_held,
    )


def _claimed(row: Any) -> Claimed:
    payload = row.payload if isinstance(row.payload, dict) else {}
    event = StoredEvent(
        row.id, row.svix_id, row.type or "", row.ordering_key, payload, source=row.source
    )
    return Claimed(event, int(row.attempts))
