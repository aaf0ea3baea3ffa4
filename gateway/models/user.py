"""The local user: a mirror of the Clerk user plus its Stripe link."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigId, Timestamps, isoformat


class User(Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Nullable: users that predate Clerk are linked later, by verified email only.
    clerk_user_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    image_url: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(default=True)
    deleted_at: Mapped[datetime | None]
    clerk_created_at: Mapped[datetime | None]
    # Clerk's data.updated_at: events older than this change nothing (Svix does not order).
    clerk_updated_at: Mapped[datetime | None]
    clerk_public_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    clerk_private_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    clerk_unsafe_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Set by a customer.deleted event, which also clears stripe_customer_id: `flask stripe
    # reconcile` lists such users (a new customer is never created behind an operator's back).
    stripe_customer_deleted_at: Mapped[datetime | None]
    # When the sweep last enqueued ensure_stripe_customer for it (gateway.billing.follow_ups).
    stripe_follow_up_at: Mapped[datetime | None]
    # The subscription as Stripe's webhooks last told it (gateway.billing.subscriptions).
    subscription_status: Mapped[str | None] = mapped_column(String(32))
    subscription_price_id: Mapped[str | None] = mapped_column(String(255))
    subscription_current_period_end: Mapped[datetime | None]
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    # The `created` of the Stripe event that set the fields above: an older event changes nothing.
    subscription_event_at: Mapped[datetime | None]

    @property
    def deactivated(self) -> bool:
        """Turned off here or deleted in Clerk: no login, no Stripe work."""
        return not self.is_active or self.deleted_at is not None

    def to_public_dict(self) -> dict[str, Any]:
        """The user as the user sees it: never private_metadata (Clerk keeps it backend-only)."""
        return {
            "id": self.id,
            "clerk_user_id": self.clerk_user_id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "image_url": self.image_url,
            "is_active": self.is_active,
            "stripe_customer_id": self.stripe_customer_id,
            "subscription_status": self.subscription_status,
            "public_metadata": self.clerk_public_metadata or {},
            "unsafe_metadata": self.clerk_unsafe_metadata or {},
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }

    def to_admin_dict(self) -> dict[str, Any]:
        """The full record, for operators behind ADMIN_API_KEYS."""
        return self.to_public_dict() | {
            "private_metadata": self.clerk_private_metadata or {},
            "deleted_at": isoformat(self.deleted_at),
            "clerk_created_at": isoformat(self.clerk_created_at),
            "clerk_updated_at": isoformat(self.clerk_updated_at),
            "stripe_subscription_id": self.stripe_subscription_id,
            "subscription_price_id": self.subscription_price_id,
            "subscription_current_period_end": isoformat(self.subscription_current_period_end),
            "stripe_customer_deleted_at": isoformat(self.stripe_customer_deleted_at),
        }
