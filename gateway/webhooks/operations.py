"""What an operator does with the ledger (admin routes and `flask webhooks`): list, show, replay."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.errors import Problem
from gateway.jobs import CLAIM_LEASE_SECONDS
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow

LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 500


class WebhookEventNotFound(Problem):
    status, code, title = 404, "webhook_event_not_found", "Webhook event not found"
    default_detail = "No webhook event with that id has been received."


class WebhookEventInProgress(Problem):
    status, code, title = 409, "webhook_event_in_progress", "Webhook event in progress"
    default_detail = "A worker is applying this event right now; replay it after it finishes."


class InvalidQuery(Problem):
    status, code, title = 400, "invalid_query", "Invalid query parameter"
    default_detail = "A query parameter has an unusable value."


def list_events(
    session: Session,
    status: str | None = None,
    event_type: str | None = None,
    limit: int = LIST_LIMIT_DEFAULT,
) -> list[WebhookEvent]:
    """Newest first."""
    query = select(WebhookEvent).order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
    if status:
        query = query.where(WebhookEvent.status == status)
    if event_type:
        query = query.where(WebhookEvent.type == event_type)
    return list(session.scalars(query.limit(limit)))


def parse_list_filters(
    status: str | None, event_type: str | None, limit: str | None
) -> tuple[str | None, str | None, int]:
    """Validate the list filters of the admin route and the CLI alike."""
    statuses = {s.value for s in EventStatus}
    if status and status not in statuses:
        raise InvalidQuery(f"status must be one of {', '.join(sorted(statuses))}.")
    if event_type is not None and len(event_type) > 100:
        raise InvalidQuery("type is at most 100 characters.")
    if limit is None or limit == "":
        return status or None, event_type or None, LIST_LIMIT_DEFAULT
    try:
        number = int(limit)
    except ValueError:
        raise InvalidQuery("limit must be a whole number.") from None
    if not 1 <= number <= LIST_LIMIT_MAX:
        raise InvalidQuery(f"limit must be between 1 and {LIST_LIMIT_MAX}.")
    return status or None, event_type or None, number


def find_event(session: Session, svix_id: str) -> WebhookEvent:
    event = session.scalar(select(WebhookEvent).where(WebhookEvent.svix_id == svix_id))
    if event is None:
        raise WebhookEventNotFound()
    return event


def prepare_replay(session: Session, svix_id: str, now: datetime | None = None) -> WebhookEvent:
    """Put one event back in the queue. Applying it again is harmless: the users service skips
    stale and already-deleted changes, so a replay only redoes what is not yet applied."""
    event = find_event(session, svix_id)
    now = now or utcnow()
    if event.status == EventStatus.PROCESSING and not lease_expired(event.claimed_at, now):
        raise WebhookEventInProgress()
    if event.status == EventStatus.INVALID and event.payload is None:
        return event  # not JSON: nothing a worker could do with it
    event.status = EventStatus.RECEIVED.value
    event.claimed_at = None
    # An operator's replay is a fresh start: without it, an event failed as attempts_exhausted
    # would be failed again by the very next claim.
    event.attempts = 0
    session.commit()
    return event


def reset_for_replay(session: Session, event_ids: list[int], from_status: str) -> list[int]:
    """Bulk prepare_replay: put these events back in line, unless a worker moved them on since
    they were selected (still `from_status`). Commits; returns the ids that were reset."""
    if not event_ids:
        return []
    rows = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(event_ids), WebhookEvent.status == from_status)
        # A body that was not JSON is kept as raw_body only: nothing a worker could do with it.
        .where(WebhookEvent.raw_body.is_(None))
        # As prepare_replay: a fresh start, or an attempts_exhausted event fails at once again.
        .values(status=EventStatus.RECEIVED.value, claimed_at=None, attempts=0)
        .returning(WebhookEvent.id)
        .execution_options(synchronize_session=False)
    ).all()
    session.commit()
    return sorted(row.id for row in rows)


def lease_expired(claimed_at: datetime | None, now: datetime) -> bool:
    """A claim older than the lease belongs to a dead worker (gateway.jobs: CLAIM_LEASE_SECONDS)."""
    if claimed_at is None:
        return True
    return claimed_at < now - timedelta(seconds=CLAIM_LEASE_SECONDS)
