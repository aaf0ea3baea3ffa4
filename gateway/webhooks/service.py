"""The webhook ledger: record a verified delivery (Clerk's, Stripe's) once per id; mark queued."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import DateTime, TextClause, bindparam, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from gateway.errors import Problem
from gateway.extensions import DATABASE_DOWN_ERRORS
from gateway.models import EventSource, EventStatus, WebhookEvent
from gateway.models.base import utcnow
from gateway.strict_json import STRICT
from gateway.webhooks.handlers import HANDLERS, STRIPE_HANDLERS

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 1024 * 1024


MAX_EVENT_ID_LENGTH = 255  # webhook_events.svix_id


_BIGINT_MAX = 2**63 - 1


class DatabaseUnavailable(Problem):
    status, code, title = 503, "database_unavailable", "Database unavailable"
    default_detail = "The event could not be stored; retry later."


@dataclass(frozen=True)
class ParsedEvent:
    status: EventStatus
    type: str | None = None
    clerk_user_id: str | None = None
    ordering_key: str | None = None
    event_timestamp: int | None = None
    data_updated_at: int | None = None
    payload: dict[str, Any] | None = None
    payload_text: str | None = None  # the body as received, when it is stored as `payload`
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
    body_text = body.decode("utf-8")  # verification already proved it is UTF-8
    try:
        payload = json.loads(body_text, **STRICT)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return _invalid(body_text, "not_json")
    if not isinstance(payload, dict):
        return _invalid(body_text, "not_an_object")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        return _invalid(body_text, "no_type")
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    handler = HANDLERS.get(event_type)
    if handler is None:
        return ParsedEvent(
            status=EventStatus.IGNORED,
            type=event_type,
            event_timestamp=_bigint(payload.get("timestamp")),
            data_updated_at=_bigint(data.get("updated_at")),
            payload=payload,
            payload_text=body_text,
        )
    key = handler.ordering_key(payload)
    return ParsedEvent(
        status=EventStatus.RECEIVED if key else EventStatus.INVALID,
        type=event_type,
        clerk_user_id=key if handler.key_is_clerk_user else None,
        ordering_key=key,
        event_timestamp=_bigint(payload.get("timestamp")),
        data_updated_at=_bigint(data.get("updated_at")),
        payload=payload,
        payload_text=body_text,
        last_error=None if key else handler.missing_key_error,
    )


def parse_stripe_event(body: bytes) -> tuple[str, ParsedEvent]:
    """(event id, classification) of a verified Stripe body (CONTRACT 4.11): a handled type with
    its customer (received, ordered by the customer id), other types (ignored), unusable (invalid).

    A body without a usable `id` gets one derived from its hash, so that Stripe's retries of the
    same body are still recognised as duplicates and the evidence is kept once.
    """
    body_text = body.decode("utf-8")  # verification already proved it is UTF-8
    fallback_id = "stripe_unparsable_" + hashlib.sha256(body).hexdigest()[:40]
    try:
        payload = json.loads(body_text, **STRICT)
    except (ValueError, RecursionError):
        return fallback_id, _invalid(body_text, "not_json")
    if not isinstance(payload, dict):
        return fallback_id, _invalid(body_text, "not_an_object")
    event_id = payload.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID_LENGTH:
        return fallback_id, _invalid(body_text, "no_event_id")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        return event_id, _invalid(body_text, "no_type")
    created = _bigint(payload.get("created"))
    fields: dict[str, Any] = {
        "type": event_type,
        # Stripe's `created` is in seconds; the column holds milliseconds, as Clerk sends them.
        "event_timestamp": created * 1000 if created is not None and created < 2**53 else None,
        "payload": payload,
        "payload_text": body_text,
    }
    handler = STRIPE_HANDLERS.get(event_type)
    if handler is None:
        return event_id, ParsedEvent(status=EventStatus.IGNORED, **fields)
    key = handler.ordering_key(payload)
    if key is None:
        return event_id, ParsedEvent(
            status=EventStatus.INVALID, last_error=handler.missing_key_error, **fields
        )
    return event_id, ParsedEvent(status=EventStatus.RECEIVED, ordering_key=key, **fields)


def record_webhook_event(
    session: Session,
    svix_id: str,
    body: bytes,
    *,
    source: EventSource = EventSource.CLERK,
    parsed: ParsedEvent | None = None,
) -> RecordedEvent:
    """Store the delivery once per event id and commit: one INSERT ... ON CONFLICT DO NOTHING
    RETURNING and one commit for a new event (a duplicate adds one SELECT).

    `parsed` is the body as its source's parser classified it (Clerk's parse_event by default).
    Raises DatabaseUnavailable. The statements are built once per dialect (_statements): building
    and compiling them on every call cost more CPU than the round trip itself.
    """
    parsed = parse_event(body) if parsed is None else parsed
    try:
        connection = session.connection()
        statements = _statements(connection.dialect.name)
        try:
            row = connection.execute(statements.insert, _row(svix_id, parsed, source)).first()
        except sa_exc.DataError:
            # PostgreSQL refuses some valid JSON (\u0000, lone surrogates): keep it as evidence.
            session.rollback()
            connection = session.connection()
            invalid = _invalid(body.decode("utf-8"), "unstorable_json")
            row = connection.execute(statements.insert, _row(svix_id, invalid, source)).first()
        duplicate = row is None
        if row is None:
            row = connection.execute(statements.find, {"svix_id": svix_id}).one()
        session.commit()
    except DATABASE_DOWN_ERRORS as exc:
        session.rollback()
        log.warning("webhook event not stored: %s", type(exc).__name__)
        raise DatabaseUnavailable() from exc
    return RecordedEvent(id=row.id, status=row.status, duplicate=duplicate)


class _Statements(NamedTuple):
    insert: TextClause
    find: TextClause


@functools.cache
def _statements(dialect: str) -> _Statements:
    """SQL text, so SQLAlchemy compiles it once (the PostgreSQL dialect's insert() construct is
    not cacheable: it was compiled on every call), and psycopg prepares it server-side after a few
    uses. The body goes in as the verified text itself, cast to JSONB, not re-serialised."""
    payload = "CAST(:payload AS JSONB)" if dialect == "postgresql" else ":payload"
    columns = ", ".join(_INSERTED)
    values = ", ".join(payload if name == "payload" else f":{name}" for name in _INSERTED)
    return _Statements(
        insert=text(
            f"INSERT INTO webhook_events ({columns}) VALUES ({values})"  # noqa: S608 - constants
            " ON CONFLICT (svix_id) DO NOTHING RETURNING id, status"
        ).bindparams(bindparam("received_at", type_=DateTime(timezone=True))),
        find=text("SELECT id, status FROM webhook_events WHERE svix_id = :svix_id"),
    )


_INSERTED = (
    "svix_id", "source", "type", "clerk_user_id", "ordering_key", "status", "attempts",
    "last_error", "event_timestamp", "data_updated_at", "payload", "raw_body", "received_at",
)  # fmt: skip


def _row(svix_id: str, parsed: ParsedEvent, source: EventSource) -> dict[str, Any]:
    return {
        "svix_id": svix_id,
        "source": source.value,
        "type": parsed.type,
        "clerk_user_id": parsed.clerk_user_id,
        "ordering_key": parsed.ordering_key,
        "status": parsed.status.value,
        "attempts": 0,
        "last_error": parsed.last_error,
        "event_timestamp": parsed.event_timestamp,
        "data_updated_at": parsed.data_updated_at,
        "payload": parsed.payload_text,
        "raw_body": parsed.raw_body,
        "received_at": utcnow(),
    }


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


def _invalid(text: str, reason: str) -> ParsedEvent:
    # PostgreSQL text cannot hold NUL; everything else is kept byte for byte.
    return ParsedEvent(
        status=EventStatus.INVALID, raw_body=text.replace("\x00", "\ufffd"), last_error=reason
    )


def _bigint(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -_BIGINT_MAX <= value <= _BIGINT_MAX else None
