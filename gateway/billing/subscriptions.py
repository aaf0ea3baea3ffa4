"""Stripe's webhooks applied to users: the subscription each user pays for (CONTRACT 4.11).

The handler of Stripe's event types (registered in gateway/webhooks/handlers.py, ordered per
customer); the worker calls it inside its batch transaction. What a status lets a user call is in
gateway/billing/entitlement.py.

Ordering: Stripe does not deliver events in order and retries for days, so every change carries
the `created` of its event, and an event older than the one that last set the user's subscription
changes nothing. `created` has one-second resolution; within one second the later delivery wins,
except that a canceled subscription never comes back (Stripe never reactivates one).

Several subscriptions of one customer: the users table holds one. An event of another
subscription replaces the stored one only when it is at least as good for the user (entitled >
other live states > ended), so canceling an old plan never hides a new active one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.models import EventStatus, User
from gateway.webhooks.events import Outcome, StoredEvent

SUBSCRIPTION_CREATED = "customer.subscription.created"
SUBSCRIPTION_UPDATED = "customer.subscription.updated"
SUBSCRIPTION_DELETED = "customer.subscription.deleted"
CUSTOMER_DELETED = "customer.deleted"
SUBSCRIPTION_TYPES = frozenset({SUBSCRIPTION_CREATED, SUBSCRIPTION_UPDATED, SUBSCRIPTION_DELETED})
# What to select for the endpoint in Stripe's dashboard; any other type is stored `ignored`.
STRIPE_HANDLED_TYPES = SUBSCRIPTION_TYPES | {CUSTOMER_DELETED}
# Statuses that let a user through GUARD_REQUIRES_SUBSCRIPTION.
ENTITLED_STATUSES = frozenset({"active", "trialing"})
# Stripe never moves a subscription out of these.
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
MAX_STATUS_LENGTH = 32  # users.subscription_status
MAX_STRIPE_ID_LENGTH = 255
MAX_TIMESTAMP = 253402300800  # year 10000: what datetime can hold


def customer_key(payload: dict[str, Any]) -> str | None:
    """The ordering key of a Stripe event: its customer's id (the user row it changes)."""
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None
    if payload.get("type") == CUSTOMER_DELETED:
        return _stripe_id(obj.get("id"))
    return _customer_id(obj)


def apply_stripe_event(session: Session, event: StoredEvent, config: Config) -> Outcome:
    """Apply one stored Stripe event to the user linked to its customer. Only flushes.

    The worker applies the events of one customer one at a time, in the order received (their
    ordering key); the user row is locked (SELECT ... FOR UPDATE) as well, because Stripe jobs and
    `flask stripe link` write the same row.
    """
    payload = event.payload
    problem = _shape_problem(payload)
    if problem:
        return _outcome(EventStatus.INVALID, problem)
    event_type = payload["type"]
    obj = payload["data"]["object"]
    if event_type not in STRIPE_HANDLED_TYPES:
        return _outcome(EventStatus.IGNORED, "type_not_handled")
    event_at = datetime.fromtimestamp(payload["created"], UTC)
    customer_id = obj["id"] if event_type == CUSTOMER_DELETED else _customer_id(obj)
    user = session.scalar(
        select(User).where(User.stripe_customer_id == customer_id).with_for_update()
    )
    if user is None:
        return _outcome(EventStatus.IGNORED, "customer_not_linked")
    if event_type == CUSTOMER_DELETED:
        # Final: a deleted customer never comes back. The user keeps no link (a new customer is
        # only made when an operator asks: `flask stripe reconcile --fix`).
        user.stripe_customer_id = None
        user.stripe_customer_deleted_at = event_at
        _clear_subscription(user)
        session.flush()
        return _outcome(EventStatus.PROCESSED)

    status = "canceled" if event_type == SUBSCRIPTION_DELETED else obj["status"]
    reason = _why_not(user, obj["id"], status, event_at)
    if reason:
        return _outcome(EventStatus.PROCESSED, reason)
    user.stripe_subscription_id = obj["id"]
    user.subscription_status = status
    user.subscription_price_id = _price_id(obj)
    user.subscription_current_period_end = _period_end(obj)
    user.subscription_event_at = event_at
    session.flush()
    return _outcome(EventStatus.PROCESSED)


def _outcome(status: EventStatus, reason: str | None = None) -> Outcome:
    # Why nothing changed (stale, customer_not_linked) is worth seeing in the admin view.
    return Outcome(status.value, reason)


def _why_not(user: User, subscription_id: str, status: str, event_at: datetime) -> str | None:
    """None when the event should be applied, else why it changes nothing."""
    stored_at = user.subscription_event_at
    current = user.stripe_subscription_id
    if current is None or current == subscription_id:
        if stored_at is not None and event_at < stored_at:
            return "stale"
        ended = current is not None and user.subscription_status in ENDED_STATUSES
        if ended and status not in ENDED_STATUSES:
            return "stale"  # the same second as the cancel, delivered after it
        return None
    # Another subscription of the same customer.
    if _rank(status) < _rank(user.subscription_status):
        return "other_subscription"
    if _rank(status) == _rank(user.subscription_status) and stored_at and event_at < stored_at:
        return "stale"
    return None


def _rank(status: str | None) -> int:
    if status in ENTITLED_STATUSES:
        return 2
    if status is None or status in ENDED_STATUSES:
        return 0
    return 1  # past_due, unpaid, incomplete, paused: live, not entitled


def _clear_subscription(user: User) -> None:
    user.stripe_subscription_id = None
    user.subscription_status = None
    user.subscription_price_id = None
    user.subscription_current_period_end = None
    user.subscription_event_at = None


def _shape_problem(payload: dict[str, Any]) -> str | None:
    """Why a handled event cannot be applied, or None. Other types are not looked into."""
    event_type = payload.get("type")
    if event_type not in STRIPE_HANDLED_TYPES:
        return None
    created = _int(payload.get("created"))
    if created is None or not 0 <= created < MAX_TIMESTAMP:
        return "no_created"
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return "no_object"
    if event_type == CUSTOMER_DELETED:
        return None if _stripe_id(obj.get("id")) else "no_customer"
    if not _stripe_id(obj.get("id")):
        return "no_subscription_id"
    if not _customer_id(obj):
        return "no_customer"
    status = obj.get("status")
    if event_type != SUBSCRIPTION_DELETED and not (
        isinstance(status, str) and 0 < len(status) <= MAX_STATUS_LENGTH
    ):
        return "no_status"
    return None


def _stripe_id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_STRIPE_ID_LENGTH else None


def _customer_id(subscription: dict[str, Any]) -> str | None:
    """`customer` is an id, or the customer object when the event was built with expansion."""
    customer = subscription.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return _stripe_id(customer)


def _first_item(subscription: dict[str, Any]) -> dict[str, Any]:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return {}


def _price_id(subscription: dict[str, Any]) -> str | None:
    """The first item's price (a plan on accounts and API versions from before prices, whose
    ids Stripe keeps as price ids)."""
    item = _first_item(subscription)
    for key in ("price", "plan"):
        value = item.get(key)
        if isinstance(value, dict):
            value = value.get("id")
        if _stripe_id(value):
            return str(value)
    return None


def _period_end(subscription: dict[str, Any]) -> datetime | None:
    """On the subscription up to API version 2025-03-31; on each item since then."""
    for source in (subscription, _first_item(subscription)):
        value = _int(source.get("current_period_end"))
        if value is not None and 0 <= value < MAX_TIMESTAMP:
            return datetime.fromtimestamp(value, UTC)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
