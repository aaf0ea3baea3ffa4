"""Applying stored webhook events in batches: exactly once, one event per ordering key at a time.

A worker claims up to `batch_size` waiting events in one short transaction (committed, so that
operators and other workers see who holds what and how often it was tried), then applies them in
one transaction that re-checks each claim under a row lock, calls each event's handler in the
order received and marks the rows in the same commit. A claim is a lease (CLAIM_LEASE_SECONDS,
derived from the task's hard time limit): a dead worker's events are claimed again once it
expires, and a slow worker whose claim was taken over finds it gone and applies nothing. So a
duplicate wake-up, a replay or a reclaim never applies an event twice.

Claims are serialised by one advisory lock (a claim is a few milliseconds for up to a batch of
events): that is what lets a claim skip every key another worker holds, so that the events of one
user are never in two batches at once, and are applied in the order received. For the same reason
the claim waits for a row another transaction holds (the receiver marking it queued, for a few
milliseconds) instead of skipping it (SKIP LOCKED): skipping would hand a later event of that
user to this batch ahead of the skipped one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import kombu.exceptions
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import ColumnElement, Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.extensions import DATABASE_DOWN_ERRORS
from gateway.jobs import CLAIM_LEASE_SECONDS
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow
from gateway.users.service import advisory_xact_lock
from gateway.webhooks.events import BATCH_SCRATCH, Outcome, StoredEvent
from gateway.webhooks.handlers import handler_for

log = logging.getLogger(__name__)

# Worth retrying: the database or the broker did not answer. Everything else is a fact about
# the event.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *DATABASE_DOWN_ERRORS,
    kombu.exceptions.OperationalError,
)
# Events per claim and per apply transaction: large enough that the per-transaction costs (claim,
# row locks, commit) are spread thin, small enough that a transaction stays well under a second.
BATCH_SIZE = 100
# A run of the task stops claiming after this long and hands over to a new message, so that other
# tasks (Stripe) interleave and no run nears the soft time limit.
DRAIN_BUDGET_SECONDS = 10.0
CLAIM_LOCK = "webhook-events-claim"
ATTEMPTS_EXHAUSTED = "attempts_exhausted"

_table: Table = WebhookEvent.__table__  # type: ignore[assignment]  # declared, so a Table
_held = _table.alias("held")


@dataclass(frozen=True)
class Claimed:
    event: StoredEvent
    attempt: int  # the row's `attempts` after this claim: the claim's token


@dataclass
class DrainResult:
    statuses: dict[str, int] = field(default_factory=dict)  # applied events by new status
    exhausted: int = 0
    more: bool = False  # stopped by the time budget with events still waiting

    @property
    def applied(self) -> int:
        return sum(self.statuses.values())

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


AfterCommit = Callable[[Sequence[tuple[str, int]]], None]


def drain(
    session: Session,
    config: Config,
    after_commit: AfterCommit,
    *,
    on_full_batch: Callable[[], None] = lambda: None,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float = DRAIN_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> DrainResult:
    """Claim and apply batches until nothing is claimable or the budget is spent.

    `after_commit` gets each batch's follow-up tasks once the batch is committed; `on_full_batch`
    is called when a claim came back full (a backlog). Transient errors propagate after the claims
    are given back (or, if the database is gone, left to expire).
    """
    deadline = clock() + budget_seconds
    result = DrainResult()
    while True:
        claimed, exhausted = claim_batch(
            session, limit=batch_size, max_attempts=config.webhook_max_attempts
        )
        result.exhausted += exhausted
        if not claimed:
            return result
        if len(claimed) == batch_size:
            on_full_batch()
        follow_ups = apply_batch(session, claimed, config, result)
        if follow_ups:
            after_commit(follow_ups)
        if clock() >= deadline:
            result.more = True
            return result


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
        select(_table.c.id, _table.c.attempts, _table.c.ordering_key)
        .where(claimable)
        .order_by(_table.c.id)
        .limit(limit)
        .with_for_update(of=_table)
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
            update(_table)
            .where(_table.c.id.in_(exhausted), claimable)
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
            update(_table)
            .where(_table.c.id.in_(chosen), claimable)
            .values(
                status=EventStatus.PROCESSING.value,
                attempts=_table.c.attempts + 1,
                claimed_at=now,
            )
            .returning(
                _table.c.id,
                _table.c.svix_id,
                _table.c.type,
                _table.c.ordering_key,
                _table.c.payload,
                _table.c.attempts,
                _table.c.source,
            )
        ).all()
        claimed = [_claimed(row) for row in sorted(returned, key=lambda r: r.id)]
    session.commit()
    return claimed, len(exhausted)


def apply_batch(
    session: Session, claimed: list[Claimed], config: Config, result: DrainResult
) -> list[tuple[str, int]]:
    """Apply a claimed batch in one transaction; returns the follow-ups to enqueue.

    A bug or an unexpected payload in one event rolls the batch back; the batch is then applied
    one event per transaction, so that only that event is failed.
    """
    try:
        return _apply_in_one_transaction(session, claimed, config, result)
    except (*TRANSIENT_ERRORS, SoftTimeLimitExceeded) as exc:
        session.rollback()
        release_claims(session, claimed, _error_name(exc))
        raise
    except Exception as exc:
        session.rollback()
        if len(claimed) > 1:
            follow_ups: list[tuple[str, int]] = []
            for one in claimed:
                follow_ups += apply_batch(session, [one], config, result)
            return follow_ups
        [one] = claimed
        log.exception("webhook event %s failed", one.event.svix_id)
        release_claims(session, claimed, _error_name(exc), failed=True)
        result.count(EventStatus.FAILED.value)
        return []


def _apply_in_one_transaction(
    session: Session, claimed: list[Claimed], config: Config, result: DrainResult
) -> list[tuple[str, int]]:
    held: dict[int, int] = dict(
        session.execute(  # type: ignore[arg-type]
            select(_table.c.id, _table.c.attempts)
            .where(
                _table.c.id.in_([one.event.id for one in claimed]),
                _table.c.status == EventStatus.PROCESSING,
            )
            .order_by(_table.c.id)
            .with_for_update()
        ).all()
    )
    # A claim another worker took over after our lease expired is no longer ours: skip it.
    ours = [one for one in claimed if held.get(one.event.id) == one.attempt]
    session.info[BATCH_SCRATCH] = {}
    try:
        return _apply_ours(session, ours, config, result)
    finally:
        session.info.pop(BATCH_SCRATCH, None)


def _apply_ours(
    session: Session, ours: list[Claimed], config: Config, result: DrainResult
) -> list[tuple[str, int]]:
    batches: dict[Any, list[StoredEvent]] = {}
    for one in ours:
        handler = handler_for(one.event.source, one.event.type)
        if handler is not None and handler.prepare is not None:
            batches.setdefault(handler.prepare, []).append(one.event)
    for prepare, events in batches.items():
        prepare(session, events)
    now = utcnow()
    marks: list[dict[str, Any]] = []
    outcomes: list[tuple[StoredEvent, Outcome]] = []
    for one in ours:
        handler = handler_for(one.event.source, one.event.type)
        if handler is None:  # a type whose handler was removed since the event was stored
            outcome = Outcome(EventStatus.IGNORED.value)
        else:
            outcome = handler.apply(session, one.event, config)
        outcomes.append((one.event, outcome))
        marks.append(
            {"event_id": one.event.id, "new_status": outcome.status, "error": outcome.last_error}
        )
    if marks:
        session.execute(_MARK_DONE.values(processed_at=now), marks)
    session.commit()
    follow_ups: list[tuple[str, int]] = []
    processed: list[str] = []
    for event, outcome in outcomes:
        result.count(outcome.status)
        if outcome.status == EventStatus.PROCESSED:
            processed.append(event.svix_id)
        else:
            log.info(
                "webhook event %s",
                outcome.status,
                extra={"event_id": event.svix_id, "status": outcome.status},
            )
        follow_ups += [job for job in outcome.follow_ups if job not in follow_ups]
    if processed:
        # One line per batch, naming every event: a line per event cost more than its apply.
        log.info("webhook events processed: %d", len(processed), extra={"event_ids": processed})
    return follow_ups


_MARK_DONE = (
    update(_table)
    .where(_table.c.id == bindparam("event_id"))
    .values(status=bindparam("new_status"), last_error=bindparam("error"), claimed_at=None)
)


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
            update(_table)
            .where(
                _table.c.id == bindparam("event_id"),
                _table.c.status == EventStatus.PROCESSING,
                _table.c.attempts == bindparam("attempt"),
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
        _held.c.ordering_key == _table.c.ordering_key,
        _held.c.status == EventStatus.PROCESSING,
        _held.c.claimed_at >= cutoff,
        _held.c.id != _table.c.id,
    )
    return and_(
        or_(
            _table.c.status.in_(EventStatus.waiting()),
            and_(_table.c.status == EventStatus.PROCESSING, _table.c.claimed_at < cutoff),
        ),
        ~key_held,
    )


def _claimed(row: Any) -> Claimed:
    payload = row.payload if isinstance(row.payload, dict) else {}
    event = StoredEvent(
        row.id, row.svix_id, row.type or "", row.ordering_key, payload, source=row.source
    )
    return Claimed(event, int(row.attempts))


def _error_name(exc: BaseException) -> str:
    # The class only: a driver message can quote row values (emails).
    return f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}"
