"""Stripe webhook events for tests: shaped as Stripe sends them, signed with the stripe library's
own scheme (Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">), and posted."""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests
import stripe

from tests.support.svix import encode

SECRET = "whsec_test_stripe_endpoint_current"
OTHER_SECRET = "whsec_test_stripe_endpoint_rotated_in"


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex[:24]


def subscription(
    subscription_id: str,
    customer: str,
    status: str = "active",
    price: str = "price_basic",
    period_end: int = 1_900_000_000,
    *,
    period_on_items: bool = False,
) -> dict[str, Any]:
    """A subscription object; `period_on_items`: the API versions since 2025-03-31, where
    current_period_end lives on each item instead of the subscription."""
    item: dict[str, Any] = {
        "id": "si_" + uuid.uuid4().hex[:14],
        "object": "subscription_item",
        "price": {"id": price, "object": "price"},
        "quantity": 1,
    }
    obj: dict[str, Any] = {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "items": {"object": "list", "data": [item], "has_more": False},
        "livemode": False,
    }
    if period_on_items:
        item["current_period_end"] = period_end
    else:
        obj["current_period_end"] = period_end
    return obj


def customer(customer_id: str, clerk_user_id: str | None = None) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "metadata": {"clerk_user_id": clerk_user_id} if clerk_user_id else {},
        "livemode": False,
    }


def stripe_event(
    event_type: str,
    obj: dict[str, Any],
    created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A snapshot event as Stripe posts it."""
    return {
        "id": event_id or new_event_id(),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def sign(body: bytes, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    """The headers Stripe sends, signed by the stripe library at `timestamp` (default: now)."""
    moment = int(time.time() if timestamp is None else timestamp)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, moment)
    return {"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"}


def post_stripe(
    client: Any,
    event: dict[str, Any] | str | bytes,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> Any:
    """Sign and POST to a Flask test client, or to a base URL string with requests."""
    body = encode(event)
    headers = sign(body, **kw) if headers is None else headers
    if isinstance(client, str):
        return requests.post(f"{client}/webhooks/stripe", data=body, headers=headers, timeout=10)
    return client.post("/webhooks/stripe", data=body, headers=headers)
