"""Applying a stored webhook event to the users table, exactly once, one event per user at a time.

Two transactions: the claim (committed, so operators and the sweep see who holds the event and
how often it was tried), then the apply, which re-checks the claim under a row lock, applies the
change and marks the row `processed` in the same commit. A duplicate message, a replay or a sweep
racing a live worker therefore finds nothing to claim or loses its claim, and never applies twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import kombu.exceptions
from sqlalchemy import ColumnElement, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from gateway.jobs import ENSURE_STRIPE_CUSTOMER, MARK_CUSTOMER_DELETED, PUSH_CUSTOMER_CHANGES
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow
from gateway.users.service import (
    ClerkUser,
    EmailRequired,
    UpsertResult,
    lock_clerk_user,
    soft_delete_clerk_user,
    upsert_clerk_user,
)
from gateway.webhooks.service import HANDLED_TYPES

log = logging.getLogger(__name__)

# Worth retrying: the database or the broker did not answer (deadlocks and serialization
# failures are OperationalErrors too). Everything else is a fact about the event.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    kombu.exceptions.OperationalError,
)
# Fields a Stripe customer carries: a change to one of them is pushed to Stripe.
STRIPE_FIELDS = frozenset({"email", "first_name", "last_name"})


@dataclass(frozen=True)
class Outcome:
    """What one run of the task did; `user_id` and the flags drive the Stripe follow-up."""

    event_id: int
    status: str | None  # the row's new status; None when there was nothing to claim
    user_id: int | None = None
    user_active: bool = False
    created_or_linked: bool = False
    changed: frozenset[str] = frozenset()
    deleted: bool = False


def process_webhook_event(session: Session, event_id: int, *, final_attempt: bool) -> Outcome:
    """Claim, apply and mark one event. Transient errors propagate (the task retries them) after
    the claim is released, or, on the final attempt, after the row is marked `failed`."""
    claim = claim_event(session, event_id)
    if claim is None:
        return Outcome(event_id, status=None)
    try:
        return apply_claimed_event(session, event_id, claim)
    except TRANSIENT_ERRORS as exc:
        session.rollback()
        release_claim(session, event_id, claim.attempt, _error_name(exc), failed=final_attempt)
        raise
    except Exception as exc:
        # A bug or an unexpected payload: retrying cannot help, and the row must not stay claimed.
        session.rollback()
        log.exception("webhook event %s failed", event_id, extra={"event_id": event_id})
        release_claim(session, event_id, claim.attempt, _error_name(exc), failed=True)
        return Outcome(event_id, status=EventStatus.FAILED.value)


class Claim(NamedTuple):
    attempt: int  # this attempt's number: the claim token
    clerk_user_id: str | None  # whose lock the apply takes


def claim_event(session: Session, event_id: int) -> Claim | None:
    """Take the event if it is waiting."""
    row = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status.in_(EventStatus.waiting()))
        .values(
            status=EventStatus.PROCESSING.value,
            attempts=WebhookEvent.attempts + 1,
            claimed_at=utcnow(),
        )
        .returning(WebhookEvent.attempts, WebhookEvent.clerk_user_id)
    ).first()
    session.commit()
    return None if row is None else Claim(int(row.attempts), row.clerk_user_id)


def apply_claimed_event(session: Session, event_id: int, claim: Claim) -> Outcome:
    if claim.clerk_user_id:
        # Before the row lock, always in this order: events of one user apply one at a time.
        lock_clerk_user(session, claim.clerk_user_id)
    event = session.scalar(
        select(WebhookEvent).where(*_still_claimed(event_id, claim.attempt)).with_for_update()
    )
    if event is None:
        # The sweep or a replay gave the event to another worker while this one was slow.
        session.rollback()
        return Outcome(event_id, status=None)

    outcome = _apply(session, event)
    event.status = outcome.status or EventStatus.PROCESSED.value
    event.processed_at = utcnow()
    event.claimed_at = None
    session.commit()
    log.info(
        "webhook event %s",
        event.status,
        extra={"event_id": event.svix_id, "status": event.status},
    )
    return outcome


def release_claim(
    session: Session, event_id: int, attempt: int, error: str, *, failed: bool
) -> None:
    """Give the event back (to be retried) or mark it failed. Best effort: when the database is
    down this fails too, and the sweep picks the row up once its claim expires."""
    values: dict[str, Any] = {"last_error": error, "claimed_at": None}
    if failed:
        values |= {"status": EventStatus.FAILED.value, "processed_at": utcnow()}
    else:
        values["status"] = EventStatus.RECEIVED.value
    try:
        session.execute(
            update(WebhookEvent).where(*_still_claimed(event_id, attempt)).values(**values)
        )
        session.commit()
    except TRANSIENT_ERRORS as exc:
        session.rollback()
        log.warning("could not release webhook event %s: %s", event_id, type(exc).__name__)


def _apply(session: Session, event: WebhookEvent) -> Outcome:
    payload = event.payload if isinstance(event.payload, dict) else {}
    data = payload.get("data")
    if event.type not in HANDLED_TYPES:
        return Outcome(event.id, status=EventStatus.IGNORED.value)
    if not isinstance(data, dict) or not event.clerk_user_id:
        event.last_error = "no_user_id"
        return Outcome(event.id, status=EventStatus.INVALID.value)

    if event.type == "user.deleted":
        result = soft_delete_clerk_user(session, event.clerk_user_id)
        return _outcome(event.id, result, deleted=result.skipped is None and not result.created)

    try:
        clerk = ClerkUser.from_payload(data)
    except ValueError:
        event.last_error = "not_a_user"
        return Outcome(event.id, status=EventStatus.INVALID.value)
    try:
        result = upsert_clerk_user(session, clerk)
    except EmailRequired:
        # Retrying cannot conjure an email: fail now; a later user.updated with one will apply.
        event.last_error = EmailRequired.code
        return Outcome(event.id, status=EventStatus.FAILED.value)
    event.last_error = None
    return _outcome(event.id, result)


def _outcome(event_id: int, result: UpsertResult, deleted: bool = False) -> Outcome:
    return Outcome(
        event_id,
        status=EventStatus.PROCESSED.value,
        user_id=result.user.id,
        user_active=result.user.is_active,
        created_or_linked=result.created or result.linked,
        changed=result.changed,
        deleted=deleted,
    )


def _error_name(exc: BaseException) -> str:
    # The class only: a driver message can quote row values (emails).
    return f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}"


def stripe_follow_ups(outcome: Outcome, stripe_enabled: bool) -> list[tuple[str, int]]:
    """The Stripe tasks (name, user id) to enqueue after the event's commit.

    Kept apart so billing can change its rules without touching the webhook flow: a new active
    user gets a customer, a change of email or name is pushed, a deletion marks the customer.
    """
    if not stripe_enabled or outcome.user_id is None:
        return []
    if outcome.deleted:
        return [(MARK_CUSTOMER_DELETED, outcome.user_id)]
    if not outcome.user_active:
        return []
    if outcome.created_or_linked:
        return [(ENSURE_STRIPE_CUSTOMER, outcome.user_id)]
    if outcome.changed & STRIPE_FIELDS:
        # Pushes the new email/name; creates the customer when the user has none yet.
        return [(PUSH_CUSTOMER_CHANGES, outcome.user_id)]
    return []


def _still_claimed(event_id: int, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """The row is still this attempt's: a sweep that reclaimed it since bumped `attempts`."""
    return (
        WebhookEvent.id == event_id,
        WebhookEvent.status == EventStatus.PROCESSING,
        WebhookEvent.attempts == attempt,
    )
