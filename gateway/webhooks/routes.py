"""POST /webhooks/clerk: verify -> one INSERT and one commit -> hand-off -> 200, in milliseconds."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.auth.public import public
from gateway.errors import PayloadTooLarge
from gateway.extensions import db
from gateway.webhooks.handoff import wake_ups
from gateway.webhooks.service import MAX_BODY_BYTES, record_webhook_event
from gateway.webhooks.signatures import WebhooksNotConfigured, verify_webhook, webhook_secrets

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/clerk")
@public  # authenticated by its Svix signature, not a Clerk session
def receive_clerk_webhook() -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    secrets = webhook_secrets(app.config["GATEWAY"])
    if not secrets:
        raise WebhooksNotConfigured()
    body = read_body_limited(MAX_BODY_BYTES)
    svix_id = verify_webhook(body, dict(request.headers), secrets)
    recorded = record_webhook_event(db.session(), svix_id, body)
    if recorded.needs_enqueue:
        # After the commit, and without waiting: the broker may be slow or down, and the row is
        # durable whatever it does (the sweep is the safety net).
        wake_ups(app).notify(recorded.id)
    log.info(
        "webhook event %s",
        "duplicate" if recorded.duplicate else recorded.status,
        extra={"event_id": svix_id, "status": recorded.status},
    )
    return jsonify(received=True, event_id=svix_id, duplicate=recorded.duplicate)


def read_body_limited(limit: int) -> bytes:
    """Refuse a body over `limit` before reading it all (Content-Length), and count what is
    actually read (chunked bodies carry no length, and a client may lie)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Webhook bodies are limited to {limit} bytes.")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"Webhook bodies are limited to {limit} bytes.")
    return body
