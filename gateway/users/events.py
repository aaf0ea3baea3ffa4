"""Clerk's user.created|updated|deleted events, applied to the users table (CONTRACT 4.5).

Registered in gateway/webhooks/handlers.py; the worker calls these inside its batch transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from gateway.billing.follow_ups import stripe_follow_ups
from gateway.config import Config
from gateway.models import EventStatus, User
from gateway.users.service import (
    LOOKUP,
    ClerkUser,
    EmailRequired,
    find_by_clerk_ids,
    lock_clerk_user,
    lock_clerk_users,
    soft_delete_clerk_user,
    upsert_clerk_user,
)
from gateway.webhooks.events import BATCH_SCRATCH, Outcome, StoredEvent


def prepare_user_events(session: Session, events: list[StoredEvent]) -> None:
    """Once per batch: every user's lock in one statement, every user's row in one query."""
    ids = sorted({event.ordering_key for event in events if event.ordering_key})
    lock_clerk_users(session, ids)
    found = {user.clerk_user_id: user for user in find_by_clerk_ids(session, ids)}
    _batch_users(session).update({clerk_id: found.get(clerk_id) for clerk_id in ids})


def apply_user_upsert(session: Session, event: StoredEvent, config: Config) -> Outcome:
    """user.created and user.updated: the same upsert (Svix may deliver them in either order)."""
    try:
        clerk = ClerkUser.from_payload(event.data)
    except ValueError:
        return Outcome(EventStatus.INVALID.value, "not_a_user")
    lock_clerk_user(session, clerk.id)  # held already when prepared: no round trip
    users = _batch_users(session)
    try:
        result = upsert_clerk_user(session, clerk, users.get(clerk.id, LOOKUP), flush_updates=False)
    except EmailRequired:
        # Retrying cannot conjure an email: fail now; a later user.updated with one will apply.
        return Outcome(EventStatus.FAILED.value, EmailRequired.code)
    users[clerk.id] = result.user
    return Outcome(follow_ups=stripe_follow_ups(result, config))


def apply_user_deleted(session: Session, event: StoredEvent, config: Config) -> Outcome:
    clerk_id = event.ordering_key
    assert clerk_id is not None  # the receiver stores keyless events as invalid
    lock_clerk_user(session, clerk_id)
    users = _batch_users(session)
    result = soft_delete_clerk_user(session, clerk_id, users.get(clerk_id, LOOKUP))
    users[clerk_id] = result.user
    return Outcome(follow_ups=stripe_follow_ups(result, config, deleted=True))


def _batch_users(session: Session) -> dict[str, User | None]:
    """The batch's users by Clerk id, as read by prepare_user_events and changed since."""
    scratch: dict[str, Any] = session.info.setdefault(BATCH_SCRATCH, {})
    users: dict[str, User | None] = scratch.setdefault("users", {})
    return users
