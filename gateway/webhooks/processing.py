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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.jobs import TRANSIENT_ERRORS
from gateway.models import EventStatus
from gateway.models.base import utcnow
from gateway.webhooks.claims import EVENTS, Claimed, claim_batch, release_claims
from gateway.webhooks.events import BATCH_SCRATCH, Outcome, StoredEvent
from gateway.webhooks.handlers import handler_for

log = logging.getLogger(__name__)


# Events per claim and per apply transaction: large enough that the per-transaction costs (claim,
# row locks, commit) are spread thin, small enough that a transaction stays well under a second.
BATCH_SIZE = 100


# A run of the task stops claiming after this long and hands over to a new message, so that other
# tasks (Stripe) interleave and no run nears the soft time limit.
DRAIN_BUDGET_SECONDS = 10.0


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
            select(EVENTS.c.id, EVENTS.c.attempts)
            .where(
                EVENTS.c.id.in_([one.event.id for one in claimed]),
                EVENTS.c.status == EventStatus.PROCESSING,
            )
            .order_by(EVENTS.c.id)
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
    update(EVENTS)
    .where(EVENTS.c.id == bindparam("event_id"))
    .values(status=bindparam("new_status"), last_error=bindparam("error"), claimed_at=None)
)


def _error_name(exc: BaseException) -> str:
    # The class only: a driver message can quote row values (emails).
    return f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}"
