"""Audit trails: guard calls and BiasGuard decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigId, utcnow


class GuardRequest(Base):
    __tablename__ = "guard_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    clerk_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    status_code: Mapped[int | None]  # the upstream's; None when it never answered
    outcome: Mapped[str] = mapped_column(String(40))  # "ok" or the problem code
    latency_ms: Mapped[float]
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class BiasguardAuditLog(Base):
    __tablename__ = "biasguard_audit_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    clerk_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    decision: Mapped[str] = mapped_column(String(20))  # allowed, denied, unavailable
    details: Mapped[dict[str, Any] | None]
    latency_ms: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
