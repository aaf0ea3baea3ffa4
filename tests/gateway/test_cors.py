"""Cross-origin browsers (CONTRACT 4.9): a listed origin gets itself back, others get nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.support.clerk import AUTHORIZED_PARTY

LISTED = "https://web.example.com"
OTHER_LISTED = "https://admin.example.com"
UNLISTED = "https://evil.example.net"


@pytest.fixture
def cors_app(make_app: Callable[..., Flask], clerk_env: dict[str, str]) -> Flask:
    return make_app(**clerk_env, CORS_ORIGINS=f"{LISTED}, {OTHER_LISTED}")


def preflight(app: Flask, origin: str, path: str = "/api/v1/guards/process") -> TestResponse:
    return app.test_client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def access_control(response: TestResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize("origin", [LISTED, OTHER_LISTED])
def test_cors_preflight_from_listed_origin_is_204_with_the_origin(
    cors_app: Flask, origin: str
) -> None:
    response = preflight(cors_app, origin)

    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Access-Control-Allow-Origin"] == origin
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type"} <= {h.strip() for h in allowed_headers.split(",")}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers.get_all("Vary") or "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_cors_preflight_needs_no_token_and_runs_no_view(cors_app: Flask) -> None:
    # /api/v1/auth/login would 401 (no token) if the hook or the view ran.
    response = preflight(cors_app, LISTED, "/api/v1/auth/login")

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == LISTED


def test_cors_origin_compares_case_insensitively(cors_app: Flask) -> None:
    response = preflight(cors_app, "HTTPS://WEB.EXAMPLE.COM")

    assert response.headers["Access-Control-Allow-Origin"] == "HTTPS://WEB.EXAMPLE.COM"


@pytest.mark.parametrize(
    "origin",
    [UNLISTED, "https://web.example.com.evil.net", "http://web.example.com", "null", "*"],
)
def test_cors_preflight_from_unlisted_origin_gets_no_access_control_header(
    cors_app: Flask, origin: str
) -> None:
    response = preflight(cors_app, origin)

    assert access_control(response) == {}


def test_cors_actual_response_carries_origin_and_vary(
    cors_app: Flask, auth_headers: Callable[..., dict[str, str]]
) -> None:
    response = cors_app.test_client().get(
        "/api/v1/auth/me", headers={"Origin": LISTED, **auth_headers("user_1")}
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == LISTED
    assert "Origin" in response.headers["Vary"]
    # A browser script may read the request id it needs to report a problem.
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"].lower()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/auth/me", 401),  # the auth hook's error
        ("POST", "/api/v1/guards/process", 401),
        ("GET", "/api/v1/nothing-here", 404),  # werkzeug's, rendered as a problem
    ],
)
def test_cors_error_responses_carry_the_headers_too(
    cors_app: Flask, method: str, path: str, status: int
) -> None:
    response = cors_app.test_client().open(path, method=method, headers={"Origin": LISTED})

    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    assert response.headers["Access-Control-Allow-Origin"] == LISTED
    assert "Origin" in response.headers["Vary"]


def test_cors_actual_response_to_unlisted_origin_has_no_access_control_header(
    cors_app: Flask, auth_headers: Callable[..., dict[str, str]]
) -> None:
    for headers in ({"Origin": UNLISTED, **auth_headers("user_1")}, {"Origin": UNLISTED}):
        response = cors_app.test_client().get("/api/v1/auth/me", headers=headers)
        assert access_control(response) == {}


def test_cors_request_without_origin_gets_no_access_control_header(
    cors_app: Flask, auth_headers: Callable[..., dict[str, str]]
) -> None:
    response = cors_app.test_client().get("/api/v1/auth/me", headers=auth_headers("user_1"))

    assert response.status_code == 200
    assert access_control(response) == {}


def test_cors_is_not_offered_outside_the_api(cors_app: Flask) -> None:
    for path in ("/healthz", "/webhooks/clerk"):
        response = cors_app.test_client().get(path, headers={"Origin": LISTED})
        assert access_control(response) == {}


def test_cors_origins_default_to_clerk_authorized_parties(clerk_app: Flask) -> None:
    response = preflight(clerk_app, AUTHORIZED_PARTY)

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == AUTHORIZED_PARTY
    assert access_control(preflight(clerk_app, LISTED)) == {}


def test_cors_without_any_listed_origin_sends_nothing(make_app: Callable[..., Flask]) -> None:
    response = preflight(make_app(CLERK_ENABLED="false"), LISTED)

    assert access_control(response) == {}
