"""The rules that keep `organizations` and `organization_memberships` a faithful mirror of Clerk.

The same inbox rules as users (gateway.users.service): Svix does not order deliveries, so an
event no newer (`updated_at`) than what is stored changes nothing; a deleted organization is
soft-deleted and never brought back; a delete for an unknown organization leaves a tombstone.
Memberships are removed, not deleted: the row stays (`removed_at`) so that a late event of the
removed membership cannot resurrect it, while a newer membership of the same user in the same
organization (Clerk gives a re-invited user a new `orgmem_` id) takes the row over.

Plain functions over a Session, one per event type, in APPLIERS: the webhook worker's dispatch
calls them; they only flush, the caller owns the transaction. Payloads are Clerk's own shapes:
OrganizationJSON, OrganizationMembershipJSON, and DeletedObjectJSON for `organization.deleted`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.errors import Problem
from gateway.models import Organization, OrganizationMembership
from gateway.models.base import is_storable_text, utcnow
from gateway.users.service import advisory_xact_lock, is_stale, ms_to_datetime

ORGANIZATION_EVENT_TYPES = frozenset(
    {"organization.created", "organization.updated", "organization.deleted"}
)
MEMBERSHIP_EVENT_TYPES = frozenset(
    {
        "organizationMembership.created",
        "organizationMembership.updated",
        "organizationMembership.deleted",
    }
)
EVENT_TYPES = ORGANIZATION_EVENT_TYPES | MEMBERSHIP_EVENT_TYPES


class OrganizationNotFound(Problem):
    status, code, title = 404, "organization_not_found", "Organization not found"
    default_detail = "No organization with that Clerk id has been mirrored here."


class InvalidPayload(ValueError):
    """The event's data is not the Clerk object its type promises; `reason` goes to last_error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Applied:
    """What one event did: `skipped` names why nothing changed ("stale", "deleted", ...)."""

    organization_id: str
    skipped: str | None = None


@dataclass(frozen=True)
class ClerkOrganization:
    id: str
    name: str | None
    slug: str | None
    public_metadata: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int | None = None
    updated_at_ms: int | None = None

    @classmethod
    def from_payload(cls, data: Any) -> ClerkOrganization:
        """Parse OrganizationJSON. Raises InvalidPayload."""
        if not isinstance(data, dict):
            raise InvalidPayload("not_an_organization")
        org_id = _clerk_id(data.get("id"), "org_")
        if org_id is None:
            raise InvalidPayload("no_organization_id")
        metadata = data.get("public_metadata")
        return cls(
            id=org_id,
            name=_text(data.get("name")),
            slug=_text(data.get("slug")),
            public_metadata=metadata if isinstance(metadata, dict) else {},
            created_at_ms=_milliseconds(data.get("created_at")),
            updated_at_ms=_milliseconds(data.get("updated_at")),
        )


@dataclass(frozen=True)
class ClerkMembership:
    id: str
    organization: ClerkOrganization
    clerk_user_id: str
    role: str | None
    created_at_ms: int | None
    updated_at_ms: int | None

    @classmethod
    def from_payload(cls, data: Any) -> ClerkMembership:
        """Parse OrganizationMembershipJSON (deletes carry the whole object too). Raises
        InvalidPayload."""
        if not isinstance(data, dict):
            raise InvalidPayload("not_a_membership")
        membership_id = _clerk_id(data.get("id"), "")
        user_data = data.get("public_user_data")
        user_id = _clerk_id(user_data.get("user_id"), "") if isinstance(user_data, dict) else None
        if membership_id is None or user_id is None:
            raise InvalidPayload("no_membership_user")
        return cls(
            id=membership_id,
            organization=ClerkOrganization.from_payload(data.get("organization")),
            clerk_user_id=user_id,
            role=_text(data.get("role")),
            created_at_ms=_milliseconds(data.get("created_at")),
            updated_at_ms=_milliseconds(data.get("updated_at")),
        )


def apply_organization_event(session: Session, payload: dict[str, Any]) -> Applied:
    """organization.created|updated|deleted."""
    data = payload.get("data")
    if payload.get("type") == "organization.deleted":
        org_id = _clerk_id(data.get("id"), "org_") if isinstance(data, dict) else None
        if org_id is None:
            raise InvalidPayload("no_organization_id")
        assert isinstance(data, dict)
        lock_organization(session, org_id)
        return delete_organization(session, org_id, slug=_text(data.get("slug")))
    clerk = ClerkOrganization.from_payload(data)
    lock_organization(session, clerk.id)
    _, applied = upsert_organization(session, clerk)
    return applied


def apply_membership_event(session: Session, payload: dict[str, Any]) -> Applied:
    """organizationMembership.created|updated|deleted, and the organization it carries."""
    clerk = ClerkMembership.from_payload(payload.get("data"))
    # Every writer of one organization and its members takes this lock first, so that two
    # workers never race on the organization row or on one membership pair.
    lock_organization(session, clerk.organization.id)
    org, _ = upsert_organization(session, clerk.organization)
    if org.deleted_at is not None:
        return Applied(clerk.organization.id, skipped="organization_deleted")
    removing = payload.get("type") == "organizationMembership.deleted"
    return _apply_membership(session, org, clerk, removing)


APPLIERS: dict[str, Callable[[Session, dict[str, Any]], Applied]] = {
    **{event_type: apply_organization_event for event_type in ORGANIZATION_EVENT_TYPES},
    **{event_type: apply_membership_event for event_type in MEMBERSHIP_EVENT_TYPES},
}


def apply_event(session: Session, payload: dict[str, Any]) -> Applied:
    """The applier of the payload's type. Raises InvalidPayload, KeyError for other types."""
    return APPLIERS[str(payload.get("type"))](session, payload)


def lock_organization(session: Session, clerk_org_id: str) -> None:
    """Serialise the writers of one organization (and its memberships) until commit."""
    advisory_xact_lock(session, clerk_org_id)


def find_organization(session: Session, clerk_org_id: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.clerk_org_id == clerk_org_id))


def organization_members(session: Session, org: Organization) -> list[OrganizationMembership]:
    """Current members (removed memberships left out), oldest first."""
    return list(
        session.scalars(
            select(OrganizationMembership)
            .where(
                OrganizationMembership.organization_id == org.id,
                OrganizationMembership.removed_at.is_(None),
            )
            .order_by(OrganizationMembership.clerk_created_at, OrganizationMembership.id)
        )
    )


def upsert_organization(session: Session, clerk: ClerkOrganization) -> tuple[Organization, Applied]:
    """Create or update by Clerk id; never backwards in time, never a deleted one."""
    org = find_organization(session, clerk.id)
    if org is None:
        org = Organization(clerk_org_id=clerk.id, is_active=True)
        _set_organization(org, clerk)
        session.add(org)
        session.flush()
        return org, Applied(clerk.id)
    if org.deleted_at is not None:
        return org, Applied(clerk.id, skipped="deleted")
    if is_stale(org.clerk_updated_at, clerk.updated_at_ms):
        return org, Applied(clerk.id, skipped="stale")
    _set_organization(org, clerk)
    session.flush()
    return org, Applied(clerk.id)


def delete_organization(session: Session, clerk_org_id: str, slug: str | None = None) -> Applied:
    """Soft-delete and remove its memberships; an unknown id leaves a tombstone."""
    org = find_organization(session, clerk_org_id)
    now = utcnow()
    if org is None:
        session.add(
            Organization(clerk_org_id=clerk_org_id, slug=slug, is_active=False, deleted_at=now)
        )
        session.flush()
        return Applied(clerk_org_id)
    if org.deleted_at is not None:
        return Applied(clerk_org_id, skipped="deleted")
    org.is_active = False
    org.deleted_at = now
    # Clerk deletes the memberships with the organization; its webhooks for them may never come.
    session.execute(
        update(OrganizationMembership)
        .where(
            OrganizationMembership.organization_id == org.id,
            OrganizationMembership.removed_at.is_(None),
        )
        .values(removed_at=now)
    )
    session.flush()
    return Applied(clerk_org_id)


def _apply_membership(
    session: Session, org: Organization, clerk: ClerkMembership, removing: bool
) -> Applied:
    row = session.scalar(
        select(OrganizationMembership).where(
            OrganizationMembership.organization_id == org.id,
            OrganizationMembership.clerk_user_id == clerk.clerk_user_id,
        )
    )
    now = utcnow()
    if row is None:
        # A removal seen first leaves the row as a tombstone of that membership.
        row = OrganizationMembership(organization_id=org.id, clerk_user_id=clerk.clerk_user_id)
        _set_membership(row, clerk, removed_at=now if removing else None)
        session.add(row)
    elif row.clerk_membership_id == clerk.id:
        if row.removed_at is not None:
            return Applied(org.clerk_org_id, skipped="removed")  # never resurrected
        if removing:
            row.removed_at = now  # a removal applies whatever its updated_at says
        elif is_stale(row.clerk_updated_at, clerk.updated_at_ms):
            return Applied(org.clerk_org_id, skipped="stale")
        else:
            _set_membership(row, clerk, removed_at=None)
    elif _created_later(clerk, row):
        # The user was invited again: a new membership replaces the old one, removed or not.
        _set_membership(row, clerk, removed_at=now if removing else None)
    else:
        return Applied(org.clerk_org_id, skipped="stale")  # an older membership's late event
    session.flush()
    return Applied(org.clerk_org_id)


def _created_later(clerk: ClerkMembership, row: OrganizationMembership) -> bool:
    if clerk.created_at_ms is None:
        return False
    return row.clerk_created_at is None or not is_stale(row.clerk_created_at, clerk.created_at_ms)


def _set_organization(org: Organization, clerk: ClerkOrganization) -> None:
    org.name = clerk.name
    org.slug = clerk.slug
    org.public_metadata = clerk.public_metadata
    org.clerk_created_at = ms_to_datetime(clerk.created_at_ms) or org.clerk_created_at
    org.clerk_updated_at = ms_to_datetime(clerk.updated_at_ms) or org.clerk_updated_at


def _set_membership(
    row: OrganizationMembership, clerk: ClerkMembership, removed_at: datetime | None
) -> None:
    row.clerk_membership_id = clerk.id
    row.role = clerk.role
    row.clerk_created_at = ms_to_datetime(clerk.created_at_ms)
    row.clerk_updated_at = ms_to_datetime(clerk.updated_at_ms)
    row.removed_at = removed_at


def _clerk_id(value: Any, prefix: str) -> str | None:
    if isinstance(value, str) and value.startswith(prefix) and 0 < len(value) <= 64:
        return value
    return None


# name, slug and role are String(255) (models/organization.py).
TEXT_LENGTH = 255


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if len(value) > TEXT_LENGTH or not is_storable_text(value):
        # Never a database error retried until failed: the event is invalid (CONTRACT 6).
        raise InvalidPayload("field_not_storable")
    return value


def _milliseconds(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
