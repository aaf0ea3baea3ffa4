"""BiasGuard on login: allowed, denied, unreachable (fail-open and fail-closed), audit rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from gateway.billing.follow_ups import SWEEP_GRACE, sweep_users_without_customer
from gateway.config import Config, ConfigError
from gateway.extensions import db
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, PING, enqueue
from gateway.models import BiasguardAuditLog, User
from gateway.models.base import utcnow
from tests.gateway.guards.upstream import GUARD_TIMEOUT, Upstream
from tests.support.broker import clear_queue, queued_tasks
from tests.support.clerk import ISSUER, ClerkBackend
from tests.support.polling import wait_until


@pytest.fixture
def biasguard_app(
    make_app: Callable[..., Flask], public_pem: str, upstream: Upstream, closed_port: int
) -> Callable[..., Flask]:
    def make(path: str | None, **env: str) -> Flask:
        url = upstream.url(path) if path else f"http://127.0.0.1:{closed_port}/check"
        defaults = {
            "CLERK_JWT_KEY": public_pem,
            "CLERK_ISSUER": ISSUER,
            "GUARD_SERVICES": f"biasguard={url}",
            "GUARD_TIMEOUT_SECONDS": GUARD_TIMEOUT,
            "BIASGUARD_ON_LOGIN": "true",
        }
        return make_app(**(defaults | env))

    return make


def login(app: Flask, token: str, request_id: str = "req-login-1") -> Any:
    return app.test_client().post(
        "/api/v1/auth/login",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )


def audit_rows(app: Flask) -> list[BiasguardAuditLog]:
    with app.app_context():
        rows = db.session.scalars(select(BiasguardAuditLog)).all()
        db.session.expunge_all()
        return list(rows)


def user_id_of(app: Flask, clerk_user_id: str) -> int | None:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.clerk_user_id == clerk_user_id))


def test_login_biasguard_allows_returns_verdict_and_audits(
    biasguard_app: Callable[..., Flask], upstream: Upstream, mint: Callable[..., str]
) -> None:
    app = biasguard_app("/allow")
    token = mint("user_ann", email="Ann@Example.com")

    response = login(app, token)

    assert response.status_code == 200, response.get_json()
    verdict = response.get_json()["biasguard"]
    assert verdict["decision"] == "allowed"
    assert verdict["details"] == {"allowed": True, "reason": "fine"}
    (hit,) = upstream.hits
    assert hit.headers["authorization"] == f"Bearer {token}"
    assert hit.headers["x-clerk-user-id"] == "user_ann"
    context = hit.json()
    assert context["clerk_user_id"] == "user_ann"
    assert context["email"] == "ann@example.com"
    # The gateway's request id, never the client's X-Request-ID.
    assert context["request_id"] == response.headers["X-Request-ID"] != "req-login-1"
    assert token not in hit.body.decode()
    (row,) = audit_rows(app)
    assert row.decision == "allowed"
    assert row.user_id == user_id_of(app, "user_ann") is not None
    assert row.clerk_user_id == "user_ann"
    assert row.request_id == context["request_id"]
    assert row.details == {"status_code": 200, "response": {"allowed": True, "reason": "fine"}}
    assert row.latency_ms is not None and row.latency_ms > 0
    assert row.error is None


def test_login_biasguard_with_jwks_and_backend_api_allows_known_clerk_user(
    make_app: Callable[..., Flask],
    clerk_env: dict[str, str],
    clerk_backend: ClerkBackend,
    upstream: Upstream,
    auth_headers: Callable[..., dict[str, str]],
) -> None:
    clerk_backend.add_user("user_gil", "gil@example.com")
    app = make_app(
        **clerk_env, GUARD_SERVICES=f"biasguard={upstream.url('/allow')}", BIASGUARD_ON_LOGIN="true"
    )

    response = app.test_client().post("/api/v1/auth/login", headers=auth_headers("user_gil"))

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["biasguard"]["decision"] == "allowed"
    (hit,) = upstream.hits
    assert hit.json()["email"] == "gil@example.com"
    assert hit.json()["user_id"] == response.get_json()["user"]["id"]
    (row,) = audit_rows(app)
    assert (row.decision, row.user_id) == ("allowed", response.get_json()["user"]["id"])


def test_login_biasguard_denies_answers_403_and_audits(
    biasguard_app: Callable[..., Flask], mint: Callable[..., str]
) -> None:
    app = biasguard_app("/deny")

    response = login(app, mint("user_bob", email="bob@example.com"))

    assert response.status_code == 403
    assert response.get_json()["code"] == "biasguard_denied"
    (row,) = audit_rows(app)
    assert row.decision == "denied"
    assert row.details["response"] == {"allowed": False, "reason": "policy"}
    assert row.user_id == user_id_of(app, "user_bob")


def test_login_biasguard_unreachable_fail_open_logs_in_and_audits(
    biasguard_app: Callable[..., Flask], mint: Callable[..., str]
) -> None:
    app = biasguard_app(None)

    response = login(app, mint("user_cat", email="cat@example.com"))

    assert response.status_code == 200
    body = response.get_json()
    assert body["user"]["clerk_user_id"] == "user_cat"
    assert body["biasguard"]["decision"] == "unavailable"
    assert body["biasguard"]["error"].startswith("guard_unavailable")
    (row,) = audit_rows(app)
    assert row.decision == "unavailable"
    assert row.error.startswith("guard_unavailable")
    assert row.details == {"status_code": None, "response": None}


def test_login_biasguard_unreachable_fail_closed_answers_503_and_audits(
    biasguard_app: Callable[..., Flask], mint: Callable[..., str]
) -> None:
    app = biasguard_app(None, BIASGUARD_FAIL_CLOSED="true")

    response = login(app, mint("user_dan", email="dan@example.com"))

    assert response.status_code == 503
    assert response.get_json()["code"] == "biasguard_unavailable"
    (row,) = audit_rows(app)
    assert row.decision == "unavailable"
    assert row.clerk_user_id == "user_dan"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/slow", "guard_timeout"),
        ("/status/500", "guard_upstream_error"),
        ("/text", "guard_upstream_error"),
        ("/odd", "unexpected answer"),
        ("/status/403", "unexpected answer"),
    ],
)
def test_login_biasguard_without_a_clear_answer_counts_as_unavailable(
    biasguard_app: Callable[..., Flask], mint: Callable[..., str], path: str, error: str
) -> None:
    app = biasguard_app(path)

    response = login(app, mint("user_eve", email="eve@example.com"))

    assert response.status_code == 200
    assert response.get_json()["biasguard"]["decision"] == "unavailable"
    (row,) = audit_rows(app)
    assert row.decision == "unavailable"
    assert row.error.startswith(error)


def test_login_biasguard_off_calls_nothing(
    biasguard_app: Callable[..., Flask], upstream: Upstream, mint: Callable[..., str]
) -> None:
    app = biasguard_app("/deny", BIASGUARD_ON_LOGIN="false")

    response = login(app, mint("user_fay", email="fay@example.com"))

    assert response.status_code == 200
    assert "biasguard" not in response.get_json()
    assert upstream.hits == []
    assert audit_rows(app) == []


def test_config_biasguard_on_login_without_biasguard_service_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="BIASGUARD_ON_LOGIN"):
        Config.from_env(
            {
                "BIASGUARD_ON_LOGIN": "true",
                "GUARD_SERVICES": "tokenguard=http://127.0.0.1:1/x",
                "GATEWAY_ENV": "development",
            }
        )


@pytest.mark.parametrize(
    ("path", "env", "status"),
    [("/deny", {}, 403), (None, {"BIASGUARD_FAIL_CLOSED": "true"}, 503)],
    ids=["denied", "fail_closed"],
)
def test_login_biasguard_refused_new_user_enqueues_nothing(
    biasguard_app: Callable[..., Flask],
    mint: Callable[..., str],
    redis_url: str,
    path: str | None,
    env: dict[str, str],
    status: int,
) -> None:
    app = biasguard_app(path, STRIPE_API_KEY="sk_test_biasguard", **env)
    clear_queue(redis_url)

    response = login(app, mint("user_gus", email="gus@example.com"))

    assert response.status_code == status
    (row,) = audit_rows(app)
    assert row.clerk_user_id == "user_gus"
    # A marker published after the response: once it is on the queue, any job the login
    # published (before its response) would be there too.
    assert enqueue(app, PING)
    tasks = wait_until(lambda: queued_tasks(redis_url), timeout=10)
    clear_queue(redis_url)
    assert tasks == [(PING, [])]

    # The refused login created the row; the sweep gives it its Stripe customer (durable).
    with app.app_context():
        user = db.session.scalars(select(User).where(User.clerk_user_id == "user_gus")).one()
        user_id = user.id
        assert user.stripe_customer_id is None
        later = utcnow() + SWEEP_GRACE + timedelta(seconds=1)
        sent = sweep_users_without_customer(
            db.session(),
            lambda task, user_id: enqueue(app, task, user_id),
            app.config["GATEWAY"],
            later,
        )
    assert sent == 1
    assert wait_until(lambda: queued_tasks(redis_url), timeout=10) == [
        (ENSURE_STRIPE_CUSTOMER, [user_id])
    ]
    clear_queue(redis_url)
