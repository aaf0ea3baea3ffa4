"""Clerk's organization.* and organizationMembership.* events for the webhook dispatch table.

Registered in gateway/webhooks/handlers.py. Ordered per organization: an organization event's key
is its `data.id`, a membership event's the id of the organization it embeds, so all changes to one
organization and its members apply one at a time, in the order received.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.models import EventStatus
from gateway.organizations.service import InvalidPayload, apply_event
from gateway.webhooks.events import Outcome, StoredEvent, data_id


def organization_key(payload: dict[str, Any]) -> str | None:
    if str(payload.get("type")).startswith("organizationMembership."):
        data = payload.get("data")
        return data_id({"data": data.get("organization")}) if isinstance(data, dict) else None
    return data_id(payload)


def apply_organization_webhook(session: Session, event: StoredEvent, config: Config) -> Outcome:
    """Any of the six types (gateway.organizations.service.APPLIERS picks by type)."""
    try:
        apply_event(session, event.payload)
    except InvalidPayload as exc:
        # Parsed before any write: nothing of this event is in the batch's transaction.
        return Outcome(EventStatus.INVALID.value, exc.reason)
    return Outcome()
