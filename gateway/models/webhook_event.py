"""The webhook ledger: every verified delivery (Clerk's via Svix, Stripe's), once per event id."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigId, isoformat, utcnow


class EventStatus(enum.StrEnum):
    RECEIVED = "received"  # committed, not yet handed to the broker
    QUEUED = "queued"  # a worker was woken for it (published to the broker)
    PROCESSING = "processing"  # claimed by a worker (the claim is a lease: see claimed_at)
    PROCESSED = "processed"
    IGNORED = "ignored"  # a type we do not handle
    INVALID = "invalid"  # validly signed but unusable (not JSON); kept as evidence
    FAILED = "failed"  # permanent error or attempts exhausted; see last_error

    @classmethod
    def waiting(cls) -> tuple[EventStatus, ...]:
        return (cls.RECEIVED, cls.QUEUED)


class EventSource(enum.StrEnum):
    CLERK = "clerk"  # Svix deliveries: svix_id is the svix-id
    STRIPE = "stripe"  # Stripe deliveries: svix_id is the event's evt_ id


_WAITING_SQL = text("status IN ('received', 'queued')")
_PROCESSING_SQL = text("status = 'processing'")


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_status_received_at", "status", "received_at"),
        # The worker's claim reads the oldest waiting events, and which ordering keys are held.
        Index(
            "ix_webhook_events_waiting",
            "id",
            postgresql_where=_WAITING_SQL,
            sqlite_where=_WAITING_SQL,
        ),
        Index(
            "ix_webhook_events_processing_key",
            "ordering_key",
            postgresql_where=_PROCESSING_SQL,
            sqlite_where=_PROCESSING_SQL,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The delivery's event id, unique across sources (Svix's msg_ ids never look like evt_ ones).
    svix_id: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(
        String(16), default=EventSource.CLERK.value, server_default=EventSource.CLERK.value
    )
    type: Mapped[str | None] = mapped_column(String(100), index=True)
    clerk_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Events with the same key are applied one at a time, in the order received (a Clerk user
    # id, an organization id, a Stripe customer id: whatever the type's handler says).
    ordering_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default=EventStatus.RECEIVED.value)
    attempts: Mapped[int] = mapped_column(default=0)  # claims so far
    last_error: Mapped[str | None] = mapped_column(Text)
    # The envelope's timestamp and data.updated_at, in Unix milliseconds as Clerk sends them
    # (Stripe's `created`, in seconds, is stored in milliseconds too).
    event_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    data_updated_at: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any] | None]
    raw_body: Mapped[str | None] = mapped_column(Text)  # only when the body is not JSON
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.svix_id,
            "source": self.source,
            "type": self.type,
            "clerk_user_id": self.clerk_user_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "received_at": isoformat(self.received_at),
            "processed_at": isoformat(self.processed_at),
        }
