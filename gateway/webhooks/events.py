"""The shapes a webhook handler works with: the stored event it is given, what it answers.

A handler is two functions (gateway/webhooks/handlers.py registers them by event type):
`ordering_key(payload)`, read at receipt, names what the event's changes are serialised by (a
Clerk user id, an organization id, a Stripe customer id); `apply(session, event, config)`, run by
the worker inside the batch's transaction, makes the change and says what became of the event
(it flushes at most, never commits). An optional `prepare(session, events)` runs once per batch
first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.models import EventStatus


@dataclass(frozen=True)
class StoredEvent:
    """One claimed event, as the worker hands it to its handler."""

    id: int
    svix_id: str
    type: str
    ordering_key: str | None
    payload: dict[str, Any]
    source: str = "clerk"  # which handler table: gateway/webhooks/handlers.py

    @property
    def data(self) -> dict[str, Any]:
        data = self.payload.get("data")
        return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Outcome:
    """What applying one event did. `follow_ups` are tasks (name, id argument) enqueued after the
    batch's commit, so that they find the rows as the event left them."""

    status: str = EventStatus.PROCESSED.value
    last_error: str | None = None
    follow_ups: tuple[tuple[str, int], ...] = ()


Apply = Callable[[Session, StoredEvent, Config], Outcome]
KeyOf = Callable[[dict[str, Any]], str | None]
Prepare = Callable[[Session, list[StoredEvent]], None]

# session.info key of a dict that lives for one batch's transaction: what a `prepare` read for
# the batch (rows by key, say), for its `apply` calls to use. Emptied when the batch ends.
BATCH_SCRATCH = "webhook_batch"


@dataclass(frozen=True)
class Handler:
    apply: Apply
    ordering_key: KeyOf
    # last_error of an event whose payload has no ordering key (stored `invalid`, never applied).
    missing_key_error: str = "no_ordering_key"
    # The key is a Clerk user id: also stored in webhook_events.clerk_user_id (admin views).
    key_is_clerk_user: bool = False
    # Optional, once per batch before any `apply`, with the batch's events of the handlers that
    # share it (in order): take their locks and read their rows in one round trip each, instead
    # of one per event.
    prepare: Prepare | None = None


def data_id(payload: dict[str, Any]) -> str | None:
    """`data.id`: the key of events about one Clerk object (a user, an organization)."""
    data = payload.get("data")
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None
