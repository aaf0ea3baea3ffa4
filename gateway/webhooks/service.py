"""The webhook ledger: record a verified delivery once per svix-id; list, replay, sweep."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.errors import Problem
from gateway.models import EventStatus, WebhookEvent
from gateway.models.base import utcnow

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# Event types the worker applies; anything else is stored as `ignored` and never enqueued.
HANDLED_TYPES = frozenset({"user.created", "user.updated", "user.deleted"})
# A claim (or a published message) older than this belongs to a dead worker: applying one event
# takes a lock wait plus a few statements, each bounded by the 15 s statement_timeout, so a live
# worker never holds a claim this long; and it is far below the broker's 1 h visibility timeout,
# so a crash heals in minutes instead of an hour.
CLAIM_TTL_SECONDS = 300
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 500
_BIGINT_MAX = 2**63 - 1
# Errors that mean "the database is not answering", as opposed to "this data is wrong".
DATABASE_DOWN_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


class DatabaseUnavailable(Problem):
    status, code, title = 503, "database_unavailable", "Database unavailable"
    default_detail = "The event could not be stored; retry later."


class WebhookEventNotFound(Problem):
    status, code, title = 404, "webhook_event_not_found", "Webhook event not found"
    default_detail = "No webhook event with that id has been received."


class WebhookEventInProgress(Problem):
    status, code, title = 409, "webhook_event_in_progress", "Webhook event in progress"
    default_detail = "A worker is applying this event right now; replay it after it finishes."


class InvalidQuery(Problem):
    status, code, title = 400, "invalid_query", "Invalid query parameter"
    default_detail = "A query parameter has an unusable value."


@dataclass(frozen=True)
class ParsedEvent:
    status: EventStatus
    type: str | None = None
    clerk_user_id: str | None = None
    event_timestamp: int | None = None
    data_updated_at: int | None = None
    payload: dict[str, Any] | None = None
    raw_body: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    id: int
    status: str
    duplicate: bool

    @property
    def needs_enqueue(self) -> bool:
        # A duplicate delivery of a row the broker never took gets another chance at once.
        return self.status == EventStatus.RECEIVED


def parse_event(body: bytes) -> ParsedEvent:
    """Classify a verified body: handled (received), unknown type (ignored), unusable (invalid)."""
    text = body.decode("utf-8")  # verification already proved it is UTF-8
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return _invalid(text, "not_json")
    if not isinstance(payload, dict):
        return _invalid(text, "not_an_object")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        return _invalid(text, "no_type")
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    user_id = data.get("id")
    user_id = user_id if isinstance(user_id, str) and 0 < len(user_id) <= 64 else None
    fields: dict[str, Any] = {
        "type": event_type,
        "clerk_user_id": user_id,
        "event_timestamp": _bigint(payload.get("timestamp")),
        "data_updated_at": _bigint(data.get("updated_at")),
        "payload": payload,
    }
    if event_type not in HANDLED_TYPES:
        return ParsedEvent(status=EventStatus.IGNORED, **fields)
    if user_id is None:
        return ParsedEvent(status=EventStatus.INVALID, last_error="no_user_id", **fields)
    return ParsedEvent(status=EventStatus.RECEIVED, **fields)


def record_webhook_event(session: Session, svix_id: str, body: bytes) -> RecordedEvent:
    """Store the delivery once per svix-id and commit. Raises DatabaseUnavailable."""
    parsed = parse_event(body)
    try:
        try:
            inserted = _insert(session, svix_id, parsed)
        except sa_exc.DataError:
            # PostgreSQL refuses some valid JSON (\u0000, lone surrogates): keep it as evidence.
            session.rollback()
            text = body.decode("utf-8")
            inserted = _insert(session, svix_id, _invalid(text, "unstorable_json"))
        if inserted is not None:
            row_id, status = inserted
            duplicate = False
        else:
            row = session.execute(
                select(WebhookEvent.id, WebhookEvent.status).where(WebhookEvent.svix_id == svix_id)
            ).one()
            row_id, status = row.id, row.status
            duplicate = True
        session.commit()
    except DATABASE_DOWN_ERRORS as exc:
        session.rollback()
        log.warning("webhook event not stored: %s", type(exc).__name__)
        raise DatabaseUnavailable() from exc
    return RecordedEvent(id=row_id, status=status, duplicate=duplicate)


def mark_queued(session: Session, event_ids: list[int]) -> None:
    """The broker took these: note it, unless a worker already moved them on."""
    if not event_ids:
        return
    now = utcnow()
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(event_ids), WebhookEvent.status.in_(EventStatus.waiting()))
        .values(status=EventStatus.QUEUED.value, queued_at=now)
    )
    session.commit()


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
    if event.status == EventStatus.PROCESSING and not _claim_expired(event.claimed_at, now):
        raise WebhookEventInProgress()
    if event.status == EventStatus.INVALID and event.payload is None:
        return event  # not JSON: nothing a worker could do with it
    event.status = EventStatus.RECEIVED.value
    event.claimed_at = None
    session.commit()
    return event


@dataclass(frozen=True)
class SweepResult:
    reclaimed: int  # processing rows whose claim expired
    found: int  # rows waiting for a worker
    enqueued: int


def sweep_webhook_events(
    session: Session,
    enqueue: Callable[[int], bool],
    older_than_seconds: float,
    claim_ttl_seconds: float = CLAIM_TTL_SECONDS,
    now: datetime | None = None,
) -> SweepResult:
    """Publish events the broker never took (`received` for `older_than_seconds`), and give
    events of dead workers back: claims older than `claim_ttl_seconds`, and `queued` rows whose
    message has been out that long (lost: a worker killed holding it unacknowledged, whose
    redelivery waits for the 1 h visibility timeout, or a Redis restarted without its data).

    `queued` rows within the TTL are left alone: during a backlog their message is simply still
    in line, and republishing it every interval would only pile duplicates onto the queue. A
    duplicate is harmless all the same: the worker's claim finds nothing to do.
    """
    now = now or utcnow()
    expired = now - timedelta(seconds=claim_ttl_seconds)
    reclaimed = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.status == EventStatus.PROCESSING, WebhookEvent.claimed_at < expired)
        .values(status=EventStatus.RECEIVED.value, claimed_at=None)
        .returning(WebhookEvent.id)
    ).all()
    session.commit()
    cutoff = now - timedelta(seconds=older_than_seconds)
    waiting = list(
        session.scalars(
            select(WebhookEvent.id)
            .where(
                or_(
                    (WebhookEvent.status == EventStatus.RECEIVED)
                    & (func.coalesce(WebhookEvent.queued_at, WebhookEvent.received_at) < cutoff),
                    (WebhookEvent.status == EventStatus.QUEUED)
                    & (WebhookEvent.queued_at < expired),
                ),
            )
            .order_by(WebhookEvent.id)
        )
    )
    reclaimed_ids = {row.id for row in reclaimed}
    ids = sorted(set(waiting) | reclaimed_ids)
    enqueued: list[int] = []
    for event_id in ids:
        if not enqueue(event_id):
            break  # the broker is down: the next sweep tries again
        enqueued.append(event_id)
    mark_queued(session, enqueued)
    if ids:
        log.info(
            "webhook sweep: %d waiting, %d reclaimed, %d enqueued",
            len(ids),
            len(reclaimed_ids),
            len(enqueued),
        )
    return SweepResult(reclaimed=len(reclaimed_ids), found=len(ids), enqueued=len(enqueued))


def _insert(session: Session, svix_id: str, parsed: ParsedEvent) -> tuple[int, str] | None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(WebhookEvent)
        .values(
            svix_id=svix_id,
            type=parsed.type,
            clerk_user_id=parsed.clerk_user_id,
            status=parsed.status.value,
            attempts=0,
            last_error=parsed.last_error,
            event_timestamp=parsed.event_timestamp,
            data_updated_at=parsed.data_updated_at,
            payload=parsed.payload,
            raw_body=parsed.raw_body,
            received_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["svix_id"])
        .returning(WebhookEvent.id, WebhookEvent.status)
    )
    row = session.execute(statement).first()
    return None if row is None else (row.id, row.status)


def _invalid(text: str, reason: str) -> ParsedEvent:
    # PostgreSQL text cannot hold NUL; everything else is kept byte for byte.
    return ParsedEvent(
        status=EventStatus.INVALID, raw_body=text.replace("\x00", "\ufffd"), last_error=reason
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bigint(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -_BIGINT_MAX <= value <= _BIGINT_MAX else None


def _claim_expired(claimed_at: datetime | None, now: datetime) -> bool:
    if claimed_at is None:
        return True
    if claimed_at.tzinfo is None:
        claimed_at = claimed_at.replace(tzinfo=now.tzinfo)
    return claimed_at < now - timedelta(seconds=CLAIM_TTL_SECONDS)
