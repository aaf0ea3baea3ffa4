"""Organization identity from the verified token to the guard (CONTRACT 4.3, 4.10).

Real RS256 tokens (versions 1 and 2), a real loopback echo upstream: the guard sees exactly the
identity the token proves, whatever the client adds; GUARD_PERMISSIONS and @require refuse
without calling anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify
from sqlalchemy import select

from gateway.auth.authorization import require
from gateway.extensions import db
from gateway.models import GuardRequest
from tests.gateway.guards.conftest import flush_audit
from tests.gateway.guards.upstream import Upstream

# One session of user_alice in org Acme as admin, impersonated by user_support, in both versions.
# session_claims() mints version 2 by default; "v": None drops the claim (a version 1 token).
V1_ORG = {
    "v": None,
    "org_id": "org_acme",
    "org_slug": "acme",
    "org_role": "org:admin",
    "org_permissions": ["org:billing:read", "org:billing:manage", "org:reports:read"],
}
V2_ORG = {
    "fea": "o:billing,u:dashboard,o:reports",
    "o": {"id": "org_acme", "slg": "acme", "rol": "admin", "per": "read,manage", "fpm": "3,1"},
}
ACTOR = {"act": {"sub": "user_support", "iss": "https://dashboard.clerk.com"}}
ACME_HEADERS = {
    "x-clerk-user-id": "user_alice",
    "x-clerk-session-id": "sess_alice",
    "x-clerk-org-id": "org_acme",
    "x-clerk-org-slug": "acme",
    "x-clerk-org-role": "org:admin",
    "x-clerk-org-permissions": "org:billing:read,org:billing:manage,org:reports:read",
    "x-clerk-actor-id": "user_support",
}
# Everything a client might try to smuggle in: none of it may reach the guard.
FORGED = {
    "X-Clerk-User-Id": "user_mallory",
    "X-Clerk-Session-Id": "sess_mallory",
    "X-Clerk-Org-Id": "org_victim",
    "X-Clerk-Org-Slug": "victim",
    "X-Clerk-Org-Role": "org:owner",
    "X-Clerk-Org-Permissions": "org:sys_memberships:manage",
    "X-Clerk-Actor-Id": "user_root",
    "X-Subscription-Status": "active",
}
TRANSPORT = {"host", "accept-encoding", "user-agent", "content-length", "content-type", "accept"}


def identity_headers(hit_headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in hit_headers.items() if k.startswith(("x-clerk-", "x-subscription"))}


def call_echo(app: Flask, token: str, headers: dict[str, str] | None = None) -> Any:
    return app.test_client().post(
        "/api/v1/guards/process",
        json={"service": "echo", "payload": {"n": 1}},
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
    )


@pytest.mark.parametrize("org_claims", [V1_ORG, V2_ORG], ids=["v1", "v2"])
def test_guard_receives_exactly_the_verified_identity_headers(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str], org_claims: dict[str, Any]
) -> None:
    token = mint("user_alice", sid="sess_alice", **org_claims, **ACTOR)

    response = call_echo(guard_app, token, FORGED | {"X-Request-ID": "req-id-1"})

    assert response.status_code == 200, response.get_json()
    (hit,) = upstream.hits
    assert identity_headers(hit.headers) == ACME_HEADERS
    assert set(hit.headers) == TRANSPORT | {"authorization", "x-request-id"} | set(ACME_HEADERS)
    assert hit.headers["authorization"] == f"Bearer {token}"


def test_guard_without_organization_or_actor_gets_user_and_session_only(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    response = call_echo(guard_app, mint("user_bob", sid="sess_bob"), FORGED)

    assert response.status_code == 200
    (hit,) = upstream.hits
    assert identity_headers(hit.headers) == {
        "x-clerk-user-id": "user_bob",
        "x-clerk-session-id": "sess_bob",
    }


def test_guard_v2_token_forged_flat_org_claims_never_reach_the_guard(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    # A version 2 token carrying flat org_* (a custom claim template) next to its real `o`.
    token = mint("user_alice", sid="sess_alice", **V2_ORG, **ACTOR, org_id="org_victim",
                 org_role="org:owner", org_permissions=["org:sys_memberships:manage"])  # fmt: skip

    assert call_echo(guard_app, token).status_code == 200
    (hit,) = upstream.hits
    assert identity_headers(hit.headers) == ACME_HEADERS


def test_guard_identity_value_that_is_not_plain_ascii_is_left_out(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    token = mint("user_alice", sid="sess_alice", o={"id": "org_acme", "slg": "acmé\r\nX-Evil: 1"})

    assert call_echo(guard_app, token).status_code == 200
    (hit,) = upstream.hits
    assert "x-evil" not in hit.headers
    assert "x-clerk-org-slug" not in hit.headers
    assert hit.headers["x-clerk-org-id"] == "org_acme"


def test_guard_organization_without_permissions_gets_an_empty_permissions_header(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    token = mint("user_bob", sid="sess_bob", o={"id": "org_acme", "slg": "acme", "rol": "member"})

    assert call_echo(guard_app, token).status_code == 200
    (hit,) = upstream.hits
    assert identity_headers(hit.headers) == {
        "x-clerk-user-id": "user_bob",
        "x-clerk-session-id": "sess_bob",
        "x-clerk-org-id": "org_acme",
        "x-clerk-org-slug": "acme",
        "x-clerk-org-role": "org:member",
        "x-clerk-org-permissions": "",
    }


def test_guard_permission_that_would_break_the_list_is_left_out(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    # Version 1 lists come verbatim from the token; a comma would forge a second permission.
    permissions = ["org:a:read", "org:b:x,org:admin:all", "org:c:wr ite"]
    token = mint("user_bob", v=None, org_id="org_acme", org_permissions=permissions)

    assert call_echo(guard_app, token).status_code == 200
    (hit,) = upstream.hits
    assert hit.headers["x-clerk-org-permissions"] == "org:a:read"


# --- GUARD_PERMISSIONS ---------------------------------------------------------------------------


@pytest.fixture
def gated_app(make_app: Callable[..., Flask], guard_env: dict[str, str]) -> Flask:
    return make_app(**guard_env, GUARD_PERMISSIONS="echo=org:billing:manage")


@pytest.mark.parametrize("org_claims", [V1_ORG, V2_ORG], ids=["v1", "v2"])
def test_gated_guard_is_called_with_the_permission(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str], org_claims: dict[str, Any]
) -> None:
    response = call_echo(gated_app, mint("user_alice", **org_claims))

    assert response.status_code == 200
    assert upstream.count("/echo") == 1


@pytest.mark.parametrize(
    "claims",
    [
        {},  # no active organization
        {"o": {"id": "org_acme", "rol": "admin", "per": "read", "fpm": "1"}, "fea": "o:billing"},
        {"o": {"id": "org_acme", "rol": "admin", "per": "read,manage", "fpm": "3"}},  # no fea
        {"v": None, "org_id": "org_acme", "org_permissions": ["org:billing:read"]},
        # flat claims in a version 2 token grant nothing
        {"org_id": "org_acme", "org_permissions": ["org:billing:manage"]},
    ],
    ids=["no-org", "read-only", "no-fea", "v1-read-only", "v2-forged-flat"],
)
def test_gated_guard_without_the_permission_is_403_and_upstream_not_called(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str], claims: dict[str, Any]
) -> None:
    response = call_echo(gated_app, mint("user_alice", **claims), FORGED)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "permission_denied"
    assert upstream.hits == []
    flush_audit(gated_app)
    with gated_app.app_context():
        rows = db.session.scalars(select(GuardRequest)).all()
        assert [(r.clerk_user_id, r.service, r.outcome, r.status_code) for r in rows] == [
            ("user_alice", "echo", "permission_denied", None)
        ]


def test_gated_guard_does_not_gate_other_guards(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    response = gated_app.test_client().post(
        "/api/v1/guards/process",
        json={"service": "teapot", "payload": {}},
        headers={"Authorization": f"Bearer {mint('user_alice')}"},
    )

    assert response.status_code == 200
    assert upstream.count("/status/418") == 1


def test_gated_guard_with_clerk_disabled_is_403(
    make_app: Callable[..., Flask], guard_env: dict[str, str], upstream: Upstream
) -> None:
    app = make_app(**guard_env, GUARD_PERMISSIONS="echo=org:billing:manage", CLERK_ENABLED="false")

    response = call_echo(app, "anything", FORGED)

    assert response.status_code == 403
    assert upstream.hits == []


# --- @require on any route -----------------------------------------------------------------------


@pytest.fixture
def require_app(gated_app: Flask) -> Flask:
    @gated_app.get("/api/v1/test/billing")
    @require(permission="org:billing:manage")
    def billing() -> Any:
        return jsonify(ok=True)

    @gated_app.get("/api/v1/test/admins")
    @require(role="admin")
    def admins() -> Any:
        return jsonify(ok=True)

    return gated_app


@pytest.mark.parametrize(
    ("path", "claims", "status"),
    [
        ("/api/v1/test/billing", V2_ORG, 200),
        ("/api/v1/test/billing", V1_ORG, 200),
        ("/api/v1/test/billing", {}, 403),
        ("/api/v1/test/billing", {"o": {"id": "org_acme", "rol": "admin"}}, 403),
        ("/api/v1/test/admins", V2_ORG, 200),
        ("/api/v1/test/admins", V1_ORG | {"org_role": "org:member"}, 403),
        ("/api/v1/test/admins", {"o": {"id": "org_acme", "rol": "member"}}, 403),
        ("/api/v1/test/admins", {}, 403),
    ],
)
def test_require_decorator_gates_a_route_on_the_session_organization(
    require_app: Flask, mint: Callable[..., str], path: str, claims: dict[str, Any], status: int
) -> None:
    response = require_app.test_client().get(
        path, headers={"Authorization": f"Bearer {mint('user_alice', **claims)}"}
    )

    assert response.status_code == status
    if status == 403:
        assert response.get_json()["code"] == "permission_denied"


def test_require_decorator_without_token_is_401_not_403(require_app: Flask) -> None:
    response = require_app.test_client().get("/api/v1/test/billing")

    assert response.status_code == 401
    assert response.get_json()["code"] == "token_missing"


def test_require_needs_a_permission_or_a_role() -> None:
    with pytest.raises(TypeError):
        require()
