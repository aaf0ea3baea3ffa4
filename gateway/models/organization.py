"""Organizations and their memberships, mirrored from Clerk's webhooks (CONTRACT 4.10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.models.base import Base, BigId, Timestamps, isoformat


class Organization(Timestamps, Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clerk_org_id: Mapped[str] = mapped_column(String(64), unique=True)
    # Null on a tombstone: a delete for an organization this mirror never saw.
    name: Mapped[str | None] = mapped_column(String(255))
    slug: Mapped[str | None] = mapped_column(String(255))
    public_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    deleted_at: Mapped[datetime | None]
    clerk_created_at: Mapped[datetime | None]
    # Clerk's updated_at: events older than this change nothing (Svix does not order).
    clerk_updated_at: Mapped[datetime | None]

    def to_admin_dict(self, members: list[OrganizationMembership]) -> dict[str, Any]:
        return {
            "id": self.clerk_org_id,
            "name": self.name,
            "slug": self.slug,
            "is_active": self.is_active,
            "public_metadata": self.public_metadata or {},
            "deleted_at": isoformat(self.deleted_at),
            "clerk_created_at": isoformat(self.clerk_created_at),
            "clerk_updated_at": isoformat(self.clerk_updated_at),
            "members": [
                {"clerk_user_id": member.clerk_user_id, "role": member.role} for member in members
            ],
        }


class OrganizationMembership(Timestamps, Base):
    """One user's place in one organization. A removed membership keeps its row (`removed_at`)
    so that a late event of that membership cannot bring it back; a later, new membership of the
    same pair (the user invited again) takes the row over."""

    __tablename__ = "organization_memberships"
    __table_args__ = (UniqueConstraint("organization_id", "clerk_user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    clerk_user_id: Mapped[str] = mapped_column(String(64), index=True)
    # Clerk's orgmem_ id of the membership this row mirrors (a re-invited user gets a new one).
    clerk_membership_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(255))
    clerk_created_at: Mapped[datetime | None]
    clerk_updated_at: Mapped[datetime | None]
    removed_at: Mapped[datetime | None]
