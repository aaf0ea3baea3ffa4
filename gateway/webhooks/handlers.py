"""The dispatch table: which function applies each webhook event type. One place to register.

Adding a type: write `apply(session, event, config) -> Outcome` next to the rows it changes
(e.g. gateway/organizations/events.py), then add a line below with the ordering key that
serialises its events. Events of one key are applied one at a time, in the order received;
events of different keys in parallel. Types not listed here are stored `ignored`.
"""

from __future__ import annotations

from gateway.billing.subscriptions import STRIPE_HANDLED_TYPES, apply_stripe_event, customer_key
from gateway.models import EventSource
from gateway.organizations.events import apply_organization_webhook, organization_key
from gateway.organizations.service import EVENT_TYPES as ORGANIZATION_EVENT_TYPES
from gateway.users.events import apply_user_deleted, apply_user_upsert, prepare_user_events
from gateway.webhooks.events import Apply, Handler, data_id


def _user_event(apply: Apply) -> Handler:
    """Ordered per Clerk user (data.id), as logins and backfill writing the same user are."""
    return Handler(
        apply,
        ordering_key=data_id,
        missing_key_error="no_user_id",
        key_is_clerk_user=True,
        prepare=prepare_user_events,
    )


HANDLERS: dict[str, Handler] = {
    "user.created": _user_event(apply_user_upsert),
    "user.updated": _user_event(apply_user_upsert),
    "user.deleted": _user_event(apply_user_deleted),
    # organization.* and organizationMembership.*: ordered per organization (CONTRACT 4.10).
    **{
        event_type: Handler(
            apply_organization_webhook,
            ordering_key=organization_key,
            missing_key_error="no_organization_id",
        )
        for event_type in sorted(ORGANIZATION_EVENT_TYPES)
    },
}

# Stripe's events (POST /webhooks/stripe), a table of their own: a type is only ever looked up in
# the table of the source that signed it. Ordered per Stripe customer, the row they change.
STRIPE_HANDLERS: dict[str, Handler] = {
    event_type: Handler(
        apply_stripe_event, ordering_key=customer_key, missing_key_error="no_customer"
    )
    for event_type in sorted(STRIPE_HANDLED_TYPES)
}
_BY_SOURCE = {EventSource.CLERK.value: HANDLERS, EventSource.STRIPE.value: STRIPE_HANDLERS}


def handler_for(source: str, event_type: str) -> Handler | None:
    return _BY_SOURCE.get(source, {}).get(event_type)
