"""POST /api/v1/guards/process and GET /api/v1/guards (a Clerk session is required by the hook)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from gateway.billing.entitlement import current_subscription_status, subscriptions_tracked
from gateway.errors import InvalidBody
from gateway.guards.runtime import guard_runtime
from gateway.guards.service import process_guard_call
from gateway.webhooks.service import DatabaseUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("guards", __name__, url_prefix="/api/v1/guards")


@bp.get("")
def list_guards() -> ResponseReturnValue:
    client = guard_runtime(current_app._get_current_object()).client  # type: ignore[attr-defined]
    return jsonify(services=client.circuit_states())


@bp.post("/process")
def process() -> ResponseReturnValue:
    service, payload = _parse_process_body(request.get_json(silent=True))
    g.guard_service = service  # /metrics counts the call by service and outcome
    config = current_app.config["GATEWAY"]
    clerk_user_id = g.get("clerk_user_id")
    requires_subscription = service in config.guard_requires_subscription
    subscription_status = None
    # Read only where subscriptions can be known (Stripe's webhooks set them), so a gateway
    # without Stripe pays no database round trip per guard call.
    if requires_subscription or subscriptions_tracked(config):
        try:
            subscription_status = current_subscription_status(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                clerk_user_id,
            )
        except DatabaseUnavailable:
            if requires_subscription:
                raise
            # The header is informational for other guards: forward without it.
            log.warning("subscription status unavailable; forwarded without it")
    envelope = process_guard_call(
        guard_runtime(current_app._get_current_object()),  # type: ignore[attr-defined]
        service,
        payload,
        # Set by the auth hook from the verified token; None when CLERK_ENABLED=false.
        token=g.get("clerk_token"),
        session=g.get("clerk_session"),
        request_id=g.request_id,
        subscription_status=subscription_status,
        requires_subscription=requires_subscription,
    )
    return jsonify(envelope)


def _parse_process_body(body: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict):
        raise InvalidBody('Expected a JSON object {"service": ..., "payload": {...}}.')
    service, payload = body.get("service"), body.get("payload")
    if not isinstance(service, str) or not service:
        raise InvalidBody('"service" must be the name of a guard service.')
    if not isinstance(payload, dict):
        raise InvalidBody('"payload" must be a JSON object.')
    return service, payload
