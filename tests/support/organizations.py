"""Clerk's own organization and membership webhook samples, varied per test."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from tests.support.svix import load_fixture

T0 = 1_700_000_000_000  # a Clerk timestamp (ms) to count from


def new_org_id() -> str:
    return "org_" + uuid.uuid4().hex[:24]


def _sample(event_type: str) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(
        load_fixture(f"clerk/webhook-{event_type}.event-catalog.json")
    )
    event["timestamp"] = int(time.time() * 1000)
    return event


def org_event(event_type: str, org_id: str, updated_at: int = T0, **data: Any) -> dict[str, Any]:
    """organization.created|updated (OrganizationJSON) or .deleted (the deleted-object form)."""
    event = _sample(event_type)
    event["data"]["id"] = org_id
    if event_type != "organization.deleted":
        event["data"] |= {"created_at": T0, "updated_at": updated_at, "slug": f"slug-{org_id}"}
    event["data"] |= data
    return event


def membership_event(
    event_type: str,
    org_id: str,
    user_id: str,
    membership_id: str = "orgmem_1",
    role: str = "org:member",
    created_at: int = T0,
    updated_at: int | None = None,
    org_updated_at: int = T0,
    **data: Any,
) -> dict[str, Any]:
    """organizationMembership.* (OrganizationMembershipJSON, deletes included)."""
    event = _sample(event_type)
    body = event["data"]
    body |= {
        "id": membership_id,
        "role": role,
        "created_at": created_at,
        "updated_at": created_at if updated_at is None else updated_at,
    }
    body["organization"] |= {
        "id": org_id,
        "created_at": T0,
        "updated_at": org_updated_at,
        "slug": f"slug-{org_id}",
    }
    body["public_user_data"]["user_id"] = user_id
    body |= data
    return event
