"""/api/v1/auth: login, refresh, and `me` (the session alone, no database)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify
from flask.blueprints import BlueprintSetupState

from gateway.auth import service
from gateway.auth.claims import SessionClaims
from gateway.auth.tokens import Claims
from gateway.billing.follow_ups import send_follow_ups, stripe_follow_ups
from gateway.clerk_api import ClerkApi
from gateway.config import Config
from gateway.extensions import db
from gateway.guards.biasguard import check_login
from gateway.guards.runtime import guard_runtime
from gateway.jobs import enqueue
from gateway.models import User
from gateway.per_process import PerProcess

bp = Blueprint("auth", __name__, url_prefix="/api/v1/auth")
CLERK_API_KEY = "clerk_api"


@bp.post("/login")
def login() -> Any:
    claims = _session_claims()
    result = service.login_user(db.session(), claims, clerk_api(current_app))
    body = {"user": result.user.to_public_dict(), "session": service.session_payload(claims)}
    config: Config = current_app.config["GATEWAY"]
    if config.biasguard_on_login:
        # Raises on a refusal, before any job: a login BiasGuard refused announces nothing.
        body["biasguard"] = check_login_with_biasguard(result.user, claims)
    if result.change is not None:
        # After commit (login_user committed): the worker must see the row. A broker outage only
        # delays Stripe linking (the sweep covers it); the login still succeeds.
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        follow_ups = stripe_follow_ups(result.change, config)
        send_follow_ups(lambda task, user_id: enqueue(app, task, user_id), follow_ups)
    return jsonify(body)


def check_login_with_biasguard(user: User, claims: Claims) -> dict[str, Any]:
    config: Config = current_app.config["GATEWAY"]
    return check_login(
        guard_runtime(current_app._get_current_object()),  # type: ignore[attr-defined]
        db.session,
        user_id=user.id,
        session_claims=claims.session,
        email=user.email,
        token=g.clerk_token,
        request_id=g.request_id,
        fail_closed=config.biasguard_fail_closed,
    )


@bp.post("/refresh")
def refresh() -> Any:
    claims = _session_claims()
    user = service.refresh_user(db.session(), claims)
    return jsonify(user=user.to_public_dict(), session=service.session_payload(claims))


@bp.get("/me")
def me() -> Any:
    """Who the session says you are: user, session, organization, actor (no database).

    CONTRACT 4.10; also the route the auth benchmark measures.
    """
    return jsonify(current_session().to_public_dict())


def current_session() -> SessionClaims:
    """The verified session of this request; 503 clerk_disabled when Clerk is off."""
    session = g.get("clerk_session")
    if session is None:
        raise service.ClerkDisabled()
    return session  # type: ignore[no-any-return]


def _session_claims() -> Claims:
    config: Config = current_app.config["GATEWAY"]
    if not config.clerk_enabled or g.get("clerk_claims") is None:
        raise service.ClerkDisabled()
    return Claims(g.clerk_claims)


@bp.record_once
def _init_clerk_api(state: BlueprintSetupState) -> None:
    config: Config = state.app.config["GATEWAY"]
    state.app.extensions[CLERK_API_KEY] = PerProcess(
        lambda: None if config.dev_mode else ClerkApi.from_config(config)
    )


def clerk_api(app: Flask) -> ClerkApi | None:
    """One Backend API client per process; none in dev mode or without CLERK_SECRET_KEY."""
    holder: PerProcess[ClerkApi | None] = app.extensions[CLERK_API_KEY]
    return holder.get()
