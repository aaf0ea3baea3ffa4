"""Bulk replay (CONTRACT 4.6, 4.8): put every event of a status (and type, and age) back in line.

Shared by POST /admin/webhook-events/replay and `flask webhooks replay --status failed`. Applying
an event again is harmless (the users service skips stale and already-applied changes), so the
point is only to bring failed events, after their cause is fixed, to a worker again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import EventStatus, WebhookEvent
from gateway.webhooks.operations import InvalidQuery, reset_for_replay
from gateway.webhooks.service import mark_queued

MAX_PER_CALL = 10_000
# Statuses worth replaying: failed (the point), processed (re-apply after a fix). Waiting events
# are already in line, and ignored/invalid ones have nothing a worker applies.
REPLAYABLE = (EventStatus.FAILED.value, EventStatus.PROCESSED.value)
BATCH_SIZE = 500


@dataclass(frozen=True)
class ReplayFilter:
    status: str
    event_type: str | None = None
    since: datetime | None = None
    limit: int = MAX_PER_CALL


@dataclass(frozen=True)
class BulkReplayResult:
    queued: int  # put back in line
    woken: bool  # a worker was woken for them (else the sweep wakes one: the broker is down)

    def summary(self) -> str:
        line = f"replay: {self.queued} event(s) queued"
        if self.queued and not self.woken:
            line += "; broker unavailable, the sweep wakes a worker for them"
        return line


def parse_replay_filter(
    status: object, event_type: object = None, since: object = None, limit: object = None
) -> ReplayFilter:
    """Validate what the admin route's body and the CLI's options give."""
    if status not in REPLAYABLE:
        raise InvalidQuery(f"status must be one of {', '.join(REPLAYABLE)}.")
    if event_type is not None and (not isinstance(event_type, str) or len(event_type) > 100):
        raise InvalidQuery("type is a string of at most 100 characters.")
    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(str(since))
        except ValueError:
            raise InvalidQuery("since must be an ISO 8601 date-time.") from None
        if moment.tzinfo is None:
            raise InvalidQuery("since needs a time zone, e.g. 2026-01-31T00:00:00Z.")
    number = MAX_PER_CALL
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PER_CALL:
            raise InvalidQuery(f"limit must be a whole number from 1 to {MAX_PER_CALL}.")
        number = limit
    return ReplayFilter(str(status), event_type or None, moment, number)


def select_for_replay(session: Session, what: ReplayFilter) -> list[int]:
    """The ids to replay, oldest first, at most what.limit."""
    query = select(WebhookEvent.id).where(WebhookEvent.status == what.status)
    if what.event_type:
        query = query.where(WebhookEvent.type == what.event_type)
    if what.since is not None:
        query = query.where(WebhookEvent.received_at >= what.since)
    return list(session.scalars(query.order_by(WebhookEvent.id).limit(what.limit)))


def replay_in_bulk(
    session: Session,
    what: ReplayFilter,
    wake: Callable[[], bool],
    *,
    progress: Callable[[int], None] | None = None,
) -> BulkReplayResult:
    """Reset the selected events in batches, then wake a worker once: a worker claims waiting
    events from the table in batches and wakes others for a backlog, so 10,000 events need one
    message, not 10,000. When the broker does not take it the events stay `received` and the
    sweep wakes a worker for them."""
    ids = select_for_replay(session, what)
    reset: list[int] = []
    for start in range(0, len(ids), BATCH_SIZE):
        done = reset_for_replay(session, ids[start : start + BATCH_SIZE], what.status)
        reset += done
        if progress is not None:
            progress(len(done))
    woken = bool(reset) and wake()
    if woken:
        for start in range(0, len(reset), BATCH_SIZE):
            mark_queued(session, reset[start : start + BATCH_SIZE])
    return BulkReplayResult(queued=len(reset), woken=woken)
