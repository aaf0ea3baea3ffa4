"""POST /webhooks/stripe: verify -> one INSERT and one commit in the webhook ledger -> hand-off
-> 200.

The same ledger, worker, sweep, replay and admin views as Clerk's events (source `stripe`).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.auth.public import public
from gateway.billing.signatures import (
    not_configured,
    stripe_webhook_secrets,
    verify_stripe_signature,
)
from gateway.extensions import db
from gateway.models import EventSource
from gateway.webhooks.handoff import wake_ups
from gateway.webhooks.routes import read_body_limited
from gateway.webhooks.service import MAX_BODY_BYTES, parse_stripe_event, record_webhook_event

log = logging.getLogger(__name__)
bp = Blueprint("stripe_webhooks", __name__)


@bp.post("/webhooks/stripe")
@public  # authenticated by its Stripe-Signature, not a Clerk session
def receive_stripe_webhook() -> Response:
    """Receive one Stripe event (Stripe-Signature), store it, acknowledge at once."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    secrets = stripe_webhook_secrets(app.config["GATEWAY"])
    if not secrets:
        raise not_configured()
    body = read_body_limited(MAX_BODY_BYTES)
    verify_stripe_signature(body, request.headers.get("Stripe-Signature"), secrets)
    event_id, parsed = parse_stripe_event(body)
    recorded = record_webhook_event(
        db.session(), event_id, body, source=EventSource.STRIPE, parsed=parsed
    )
    if recorded.needs_enqueue:
        # After the commit, without waiting for the broker (the sweep is the safety net).
        wake_ups(app).notify(recorded.id)
    log.info(
        "stripe webhook event %s",
        "duplicate" if recorded.duplicate else recorded.status,
        extra={"event_id": event_id, "status": recorded.status},
    )
    return jsonify(received=True, event_id=event_id, duplicate=recorded.duplicate)
