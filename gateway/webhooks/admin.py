"""Operator routes behind ADMIN_API_KEYS (CONTRACT 4.6): users as mirrored, the event ledger."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.auth.bearer import bearer_credential
from gateway.auth.public import public
from gateway.errors import InvalidBody, NotFound, Problem
from gateway.extensions import db
from gateway.jobs import APPLY_WEBHOOK_EVENTS, enqueue
from gateway.models import EventStatus
from gateway.users.service import UserNotFound, find_by_clerk_id, find_by_email
from gateway.webhooks.bulk_replay import parse_replay_filter, replay_in_bulk
from gateway.webhooks.handoff import publish_event
from gateway.webhooks.operations import (
    InvalidQuery,
    list_events,
    parse_list_filters,
    prepare_replay,
)
from gateway.webhooks.queues import queues_overview

bp = Blueprint("webhooks_admin", __name__)
F = TypeVar("F", bound=Callable[..., Any])


class AdminKeyInvalid(Problem):
    status, code, title = 401, "admin_key_invalid", "Admin key required"
    default_detail = "Send Authorization: Bearer <an ADMIN_API_KEYS key>."


def keys_match(given: str, keys: tuple[str, ...]) -> bool:
    """Constant-time against every key: neither a key's prefix nor its position leaks."""
    given_bytes = given.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given_bytes, key.encode())
    return matched


def admin_only(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        keys = current_app.config["GATEWAY"].admin_api_keys
        if not keys:
            raise NotFound()  # unset: the admin surface does not exist
        given = bearer_credential(request.headers.get("Authorization"))
        if given is None or not keys_match(given, keys):
            challenge = 'Bearer realm="admin"'
            if given is not None:
                challenge += ', error="invalid_token"'  # RFC 6750: a key was given, and is wrong
            raise AdminKeyInvalid(headers={"WWW-Authenticate": challenge})
        return view(*args, **kwargs)

    wrapper.admin_key = True  # type: ignore[attr-defined]  # read by the OpenAPI document
    return public(wrapper)  # type: ignore[return-value]  # own key, not a Clerk session


@bp.get("/webhooks/clerk/users/<clerk_user_id>")
@admin_only
def show_user(clerk_user_id: str) -> Response:
    user = find_by_clerk_id(db.session(), clerk_user_id)
    if user is None:
        raise UserNotFound()
    return jsonify(user=user.to_admin_dict())


@bp.get("/webhooks/clerk/users/email/<path:email>")
@admin_only
def show_user_by_email(email: str) -> Response:
    user = find_by_email(db.session(), email)
    if user is None:
        raise UserNotFound()
    return jsonify(user=user.to_admin_dict())


@bp.get("/admin/webhook-events")
@admin_only
def list_webhook_events() -> Response:
    status, event_type, limit = parse_list_filters(
        request.args.get("status"), request.args.get("type"), request.args.get("limit")
    )
    events = list_events(db.session(), status=status, event_type=event_type, limit=limit)
    return jsonify(events=[event.to_dict() for event in events])


@bp.post("/admin/webhook-events/<svix_id>/replay")
@admin_only
def replay_webhook_event(svix_id: str) -> tuple[Response, int]:
    event = prepare_replay(db.session(), svix_id)
    if event.status == EventStatus.RECEIVED:
        publish_event(current_app._get_current_object(), event.id)  # type: ignore[attr-defined]
    db.session.refresh(event)
    return jsonify(event=event.to_dict()), 202


@bp.post("/admin/webhook-events/replay")
@admin_only
def replay_webhook_events() -> tuple[Response, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidBody('Expected a JSON object {"status": "failed", "type"?, "since"?}.')
    try:
        what = parse_replay_filter(body.get("status"), body.get("type"), body.get("since"))
    except InvalidQuery as problem:
        raise InvalidBody(problem.detail) from None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    result = replay_in_bulk(db.session(), what, lambda: enqueue(app, APPLY_WEBHOOK_EVENTS))
    return jsonify(queued=result.queued), 202


@bp.get("/admin/queues")
@admin_only
def show_queues() -> Response:
    return jsonify(queues_overview(current_app._get_current_object()))  # type: ignore[attr-defined]
