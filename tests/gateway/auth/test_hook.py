"""The before_request hook: where the token is taken from, CSRF, public views, CLERK_ENABLED."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, g, jsonify

from gateway.auth.public import public
from tests.support.clerk import AUTHORIZED_PARTY, mint_token


def _add_echo(app: Flask) -> Flask:
    @app.route("/test/echo", methods=["GET", "POST", "DELETE"])
    def echo() -> Any:
        return jsonify(user_id=g.clerk_user_id, token=g.clerk_token, claims=g.clerk_claims)

    @app.get("/test/open")
    @public
    def open_view() -> Any:
        return jsonify(user_id=g.clerk_user_id)

    return app


@pytest.fixture
def echo_app(clerk_app: Flask) -> Flask:
    return _add_echo(clerk_app)


def test_hook_bearer_scheme_is_case_insensitive(echo_app, clerk_keys):
    token = mint_token(clerk_keys.primary, user_id="user_case")
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = echo_app.test_client().get(
            "/test/echo", headers={"Authorization": f"{scheme} {token}"}
        )
        assert response.get_json()["user_id"] == "user_case"


def test_hook_cookie_token_on_get_is_accepted(echo_app, clerk_keys):
    client = echo_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary, user_id="user_cookie"))
    response = client.get("/test/echo")
    assert response.status_code == 200
    assert response.get_json()["user_id"] == "user_cookie"


def test_hook_header_wins_over_cookie(echo_app, clerk_keys):
    client = echo_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary, user_id="user_cookie"))
    header = {"Authorization": f"Bearer {mint_token(clerk_keys.primary, user_id='user_header')}"}
    assert client.get("/test/echo", headers=header).get_json()["user_id"] == "user_header"
    # A bad header token is not rescued by a good cookie.
    bad = client.get("/test/echo", headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401
    assert bad.get_json(force=True)["code"] == "token_invalid"


def test_hook_cookie_on_post_without_listed_origin_is_csrf_origin(echo_app, clerk_keys):
    client = echo_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary))
    for headers in ({}, {"Origin": "https://evil.example.com"}):
        response = client.post("/test/echo", headers=headers)
        assert response.status_code == 403
        assert response.get_json(force=True)["code"] == "csrf_origin"
    assert client.delete("/test/echo").status_code == 403


def test_hook_cookie_on_head_or_options_without_origin_is_accepted(echo_app, clerk_keys):
    client = echo_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary, user_id="user_safe"))
    assert client.head("/test/echo").status_code == 200
    assert client.options("/test/echo").status_code == 200


def test_hook_cookie_on_post_with_listed_origin_is_accepted(echo_app, clerk_keys):
    client = echo_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary, user_id="user_x"))
    response = client.post("/test/echo", headers={"Origin": AUTHORIZED_PARTY})
    assert response.status_code == 200 and response.get_json()["user_id"] == "user_x"


def test_hook_header_token_on_post_needs_no_origin(echo_app, clerk_keys):
    headers = {"Authorization": f"Bearer {mint_token(clerk_keys.primary)}"}
    assert echo_app.test_client().post("/test/echo", headers=headers).status_code == 200


def test_hook_public_view_and_unknown_route_skip_auth(echo_app):
    client = echo_app.test_client()
    open_view = client.get("/test/open")
    assert open_view.status_code == 200 and open_view.get_json() == {"user_id": None}
    assert client.get("/healthz").status_code == 200
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.get_json(force=True)["code"] == "not_found"


def test_hook_puts_token_claims_and_sub_on_g(echo_app, clerk_keys):
    token = mint_token(clerk_keys.primary, user_id="user_g", email="g@example.com")
    body = (
        echo_app.test_client()
        .get("/test/echo", headers={"Authorization": f"Bearer {token}"})
        .get_json()
    )
    assert body["token"] == token
    assert body["user_id"] == "user_g"
    assert body["claims"]["email"] == "g@example.com" and body["claims"]["sub"] == "user_g"


def test_hook_clerk_disabled_verifies_nothing(make_app, clerk_env):
    app = _add_echo(make_app(**(clerk_env | {"CLERK_ENABLED": "false"})))
    response = app.test_client().get("/test/echo", headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 200
    assert response.get_json() == {"user_id": None, "token": None, "claims": None}


def test_hook_no_key_configured_is_503_naming_the_variables(make_app, clerk_keys):
    app = _add_echo(make_app())
    response = app.test_client().get(
        "/test/echo", headers={"Authorization": f"Bearer {mint_token(clerk_keys.primary)}"}
    )
    assert response.status_code == 503
    body = response.get_json(force=True)
    assert body["code"] == "jwk_remote_failed_to_load" and "CLERK_PUBLISHABLE_KEY" in body["detail"]


def test_hook_backend_api_jwks_used_with_only_secret_key(make_app, clerk_keys, httpserver):
    from werkzeug.wrappers import Response

    seen: list[str | None] = []

    def jwks(request):
        seen.append(request.headers.get("Authorization"))
        body = json.dumps({"keys": [clerk_keys.primary.public_jwk]})
        return Response(body, content_type="application/json")

    httpserver.expect_request("/v1/jwks").respond_with_handler(jwks)
    app = _add_echo(
        make_app(
            CLERK_SECRET_KEY="sk_test_only",
            CLERK_API_URL=httpserver.url_for("/v1"),
            CLERK_ISSUER="https://clerk.gateway.test",
        )
    )
    response = app.test_client().get(
        "/test/echo", headers={"Authorization": f"Bearer {mint_token(clerk_keys.primary)}"}
    )
    assert response.status_code == 200
    assert seen == ["Bearer sk_test_only"]


def test_auth_headers_fixture_authenticates_any_user(echo_app, auth_headers):
    response = echo_app.test_client().get("/test/echo", headers=auth_headers("user_fixture"))
    assert response.status_code == 200 and response.get_json()["user_id"] == "user_fixture"
