"""GET /api/v1/auth/me (CONTRACT 4.10): the normalised session, the same for token versions 1
and 2, with no database at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.support.clerk import ClerkKeys, mint_token

V1 = {
    "v": None,
    "org_id": "org_acme",
    "org_slug": "acme",
    "org_role": "org:admin",
    "org_permissions": ["org:billing:read", "org:billing:manage"],
}
V2 = {
    "fea": "u:dashboard,o:billing",
    "o": {"id": "org_acme", "slg": "acme", "rol": "admin", "per": "read,manage", "fpm": "3"},
}
ACME = {
    "id": "org_acme",
    "slug": "acme",
    "role": "org:admin",
    "permissions": ["org:billing:read", "org:billing:manage"],
}


@pytest.fixture
def me(clerk_app: Flask, clerk_keys: ClerkKeys) -> Callable[..., Any]:
    def get(**claims: Any) -> Any:
        token = mint_token(clerk_keys.primary, user_id="user_alice", sid="sess_alice", **claims)
        return clerk_app.test_client().get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        )

    return get


@pytest.mark.parametrize("claims", [V1, V2], ids=["v1", "v2"])
def test_me_answers_user_session_org_and_actor(me: Callable[..., Any], claims: dict) -> None:
    response = me(**claims, act={"sub": "user_support"})

    assert response.status_code == 200
    assert response.get_json() == {
        "user_id": "user_alice",
        "session_id": "sess_alice",
        "org": ACME,
        "actor": {"sub": "user_support"},
    }


@pytest.mark.parametrize("claims", [{}, {"v": None}], ids=["v2", "v1"])
def test_me_without_organization_or_actor_answers_nulls(
    me: Callable[..., Any], claims: dict
) -> None:
    assert me(**claims).get_json() == {
        "user_id": "user_alice",
        "session_id": "sess_alice",
        "org": None,
        "actor": None,
    }


def test_me_v2_ignores_forged_flat_org_claims(me: Callable[..., Any]) -> None:
    forged = {"org_id": "org_victim", "org_role": "org:owner", "org_permissions": ["org:x:y"]}

    assert me(**V2, **forged).get_json()["org"] == ACME
    assert me(**forged).get_json()["org"] is None


def test_me_malformed_fea_is_token_invalid(me: Callable[..., Any]) -> None:
    response = me(fea="billing", o={"id": "org_acme", "per": "read", "fpm": "1"})

    assert response.status_code == 401
    assert response.get_json()["code"] == "token_invalid"


def test_me_touches_no_database(
    make_app: Callable[..., Flask], clerk_env: dict[str, str], clerk_keys: ClerkKeys
) -> None:
    # An unreachable database: /me still answers, because it never asks it anything.
    app = make_app(**clerk_env, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    token = mint_token(clerk_keys.primary, user_id="user_alice", **V2)

    response = app.test_client().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200
    assert response.get_json()["org"] == ACME


def test_me_with_clerk_disabled_is_503(make_app: Callable[..., Flask]) -> None:
    response = make_app(CLERK_ENABLED="false").test_client().get("/api/v1/auth/me")

    assert response.status_code == 503
    assert response.get_json()["code"] == "clerk_disabled"
