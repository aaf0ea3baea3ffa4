"""POST /api/v1/guards/process and GET /api/v1/guards (a Clerk session is required by the hook)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from gateway.errors import InvalidBody
from gateway.guards.runtime import guard_runtime
from gateway.guards.service import process_guard_call

bp = Blueprint("guards", __name__, url_prefix="/api/v1/guards")


@bp.get("")
def list_guards() -> ResponseReturnValue:
    client = guard_runtime(current_app._get_current_object()).client  # type: ignore[attr-defined]
    return jsonify(services=client.circuit_states())


@bp.post("/process")
def process() -> ResponseReturnValue:
    service, payload = _parse_process_body(request.get_json(silent=True))
    envelope = process_guard_call(
        guard_runtime(current_app._get_current_object()),  # type: ignore[attr-defined]
        service,
        payload,
        # Set by the auth hook from the verified token; None when CLERK_ENABLED=false.
        token=g.get("clerk_token"),
        session=g.get("clerk_session"),
        request_id=g.request_id,
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
