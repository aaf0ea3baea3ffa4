"""POST /webhooks/clerk: verify -> store -> commit -> enqueue -> 200, in milliseconds."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.auth.public import public
from gateway.errors import PayloadTooLarge
from gateway.extensions import db
from gateway.jobs import PROCESS_WEBHOOK_EVENT, enqueue
from gateway.webhooks.service import MAX_BODY_BYTES, mark_queued, record_webhook_event
from gateway.webhooks.signatures import WebhooksNotConfigured, verify_webhook, webhook_secrets

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/clerk")
@public  # authenticated by its Svix signature, not a Clerk session
def receive_clerk_webhook() -> Response:
    secrets = webhook_secrets(current_app.config["GATEWAY"])
    if not secrets:
        raise WebhooksNotConfigured()
    body = read_body_limited(MAX_BODY_BYTES)
    svix_id = verify_webhook(body, dict(request.headers), secrets)
    recorded = record_webhook_event(db.session(), svix_id, body)
    if recorded.needs_enqueue:
        publish_event(recorded.id)
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


def publish_event(event_id: int) -> bool:
    """Hand the event to the broker; when it is down or slow the row waits for the sweep.

    False when the broker did not take it. Shared by the receiver, the admin replay route and
    `flask webhooks replay`.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not enqueue(app, PROCESS_WEBHOOK_EVENT, event_id):
        return False
    try:
        mark_queued(db.session(), [event_id])
    except Exception as exc:  # noqa: BLE001 - the event is durable and published; only a label
        db.session.rollback()
        log.warning("could not mark webhook event queued: %s", type(exc).__name__)
    return True
