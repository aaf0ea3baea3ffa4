"""POST /api/v1/guards/process and GET /api/v1/guards against real loopback upstreams."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from gateway.extensions import db
from gateway.guards.client import USER_AGENT
from gateway.models import GuardRequest, User
from tests.gateway.guards.conftest import flush_audit
from tests.gateway.guards.upstream import Upstream

# What urllib3 itself adds (Host, framing, identity) plus what the gateway builds. Nothing else.
FORWARDED_HEADERS = {
    "host",
    "accept-encoding",
    "user-agent",
    "content-length",
    "content-type",
    "accept",
    "authorization",
    "x-request-id",
    "x-clerk-user-id",
    "x-clerk-session-id",
}


def process(
    client: FlaskClient, token: str | None, body: Any, headers: dict[str, str] | None = None
) -> TestResponse:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/api/v1/guards/process", json=body, headers=headers)


def test_process_echo_forwards_callers_token_user_and_request_id(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    token = mint("user_alice")
    response = process(
        guard_app.test_client(),
        token,
        {"service": "echo", "payload": {"text": "hello"}},
        {"X-Request-ID": "req-echo-1"},
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["service"] == "echo"
    assert body["status_code"] == 200
    # The gateway's own id, never the client's X-Request-ID (CONTRACT 4.3).
    request_id = response.headers["X-Request-ID"]
    assert body["request_id"] == request_id != "req-echo-1"
    assert isinstance(body["latency_ms"], float) and body["latency_ms"] > 0
    assert body["data"]["payload"] == {"text": "hello"}
    (hit,) = upstream.hits
    assert hit.headers["authorization"] == f"Bearer {token}"
    assert hit.headers["x-clerk-user-id"] == "user_alice"
    assert hit.headers["x-request-id"] == request_id
    flush_audit(guard_app)
    with guard_app.app_context():
        assert db.session.scalars(select(GuardRequest.request_id)).all() == [request_id]
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["user-agent"] == USER_AGENT


def test_process_client_cookies_hop_by_hop_and_x_clerk_headers_are_not_forwarded(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    response = process(
        guard_app.test_client(),
        mint("user_alice"),
        {"service": "echo", "payload": {}},
        {
            "Cookie": "__session=other-session; tracking=1",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "hop-value",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Clerk-User-Id": "user_mallory",
            "X-Clerk-Session-Id": "sess_forged",
            "X-Forwarded-For": "10.0.0.1",
            "X-Custom": "client-value",
        },
    )

    assert response.status_code == 200
    (hit,) = upstream.hits
    assert set(hit.headers) <= FORWARDED_HEADERS, set(hit.headers) - FORWARDED_HEADERS
    # The user id is the verified token's sub, never the client's header.
    assert hit.headers["x-clerk-user-id"] == "user_alice"
    assert "other-session" not in str(hit.headers)


@pytest.mark.parametrize(("service", "upstream_status"), [("teapot", 418), ("created", 201)])
def test_process_upstream_2xx_or_4xx_answers_200_with_upstream_status(
    guard_app: Flask, mint: Callable[..., str], service: str, upstream_status: int
) -> None:
    response = process(guard_app.test_client(), mint("user_a"), {"service": service, "payload": {}})

    assert response.status_code == 200
    assert response.get_json()["status_code"] == upstream_status
    assert response.get_json()["data"] == {"status": upstream_status}


@pytest.mark.parametrize(
    ("service", "status", "code"),
    [
        ("failing", 502, "guard_upstream_error"),
        ("html", 502, "guard_upstream_error"),
        ("redirect", 502, "guard_upstream_error"),
        ("down", 503, "guard_unavailable"),
        ("slow", 504, "guard_timeout"),
        ("nope", 404, "guard_unknown"),
    ],
)
def test_process_upstream_fault_answers_problem(
    guard_app: Flask, mint: Callable[..., str], service: str, status: int, code: str
) -> None:
    token = mint("user_a")
    response = process(guard_app.test_client(), token, {"service": service, "payload": {}})

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code
    assert token not in response.get_data(as_text=True)
    assert "127.0.0.1" not in response.get_data(as_text=True)  # no upstream URL leaks


def test_process_closed_port_retries_connect_once_then_answers_503(
    guard_app: Flask, mint: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")

    response = process(guard_app.test_client(), mint("user_a"), {"service": "down", "payload": {}})

    assert response.get_json()["code"] == "guard_unavailable"
    retries = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retries) == 1


def test_process_oversized_upstream_answer_is_502_and_connection_not_reused_dirty(
    make_app: Callable[..., Flask],
    guard_env: dict[str, str],
    upstream: Upstream,
    mint: Callable[..., str],
) -> None:
    env = guard_env | {"GUARD_SERVICES": f"big={upstream.url('/big')},echo={upstream.url('/echo')}"}
    client, token = make_app(**env).test_client(), mint("user_a")

    big = process(client, token, {"service": "big", "payload": {}})
    after = process(client, token, {"service": "echo", "payload": {"n": 2}})

    assert big.status_code == 502
    assert big.get_json()["code"] == "guard_upstream_error"
    # Same upstream host: the pool must not hand out the connection with 4 MiB still unread.
    assert after.status_code == 200
    assert after.get_json()["data"]["payload"] == {"n": 2}


@pytest.mark.parametrize(
    "body",
    [
        ["echo"],
        "echo",
        {"payload": {}},
        {"service": 3, "payload": {}},
        {"service": "", "payload": {}},
        {"service": "echo"},
        {"service": "echo", "payload": [1, 2]},
        {"service": "echo", "payload": "text"},
    ],
)
def test_process_malformed_body_answers_400_invalid_body(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str], body: Any
) -> None:
    response = process(guard_app.test_client(), mint("user_a"), body)

    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_body"
    assert upstream.hits == []


@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000])
def test_process_json_nested_past_recursion_limit_answers_400_invalid_body(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str], nested: str
) -> None:
    response = guard_app.test_client().post(
        "/api/v1/guards/process",
        data=nested,
        headers={"Authorization": f"Bearer {mint('user_a')}", "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_body"
    assert upstream.hits == []


def test_process_body_over_2_mib_answers_413_problem(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    body = '{"service": "echo", "payload": {"blob": "' + "x" * (3 * 1024 * 1024) + '"}}'
    response = guard_app.test_client().post(
        "/api/v1/guards/process",
        data=body,
        headers={"Authorization": f"Bearer {mint('user_a')}", "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "payload_too_large"
    assert upstream.hits == []


def test_process_non_json_request_answers_400_invalid_body(
    guard_app: Flask, mint: Callable[..., str]
) -> None:
    response = guard_app.test_client().post(
        "/api/v1/guards/process",
        data="service=echo",
        headers={"Authorization": f"Bearer {mint('user_a')}", "Content-Type": "text/plain"},
    )

    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_body"


def test_process_without_session_answers_401_and_calls_nothing(
    guard_app: Flask, upstream: Upstream
) -> None:
    response = process(guard_app.test_client(), None, {"service": "echo", "payload": {}})

    assert response.status_code == 401
    assert response.get_json()["code"] == "token_missing"
    assert upstream.hits == []


def test_list_guards_without_session_answers_401(guard_app: Flask) -> None:
    assert guard_app.test_client().get("/api/v1/guards").status_code == 401


def test_process_clerk_disabled_forwards_without_user_token(
    make_app: Callable[..., Flask], guard_env: dict[str, str], upstream: Upstream
) -> None:
    app = make_app(**guard_env, CLERK_ENABLED="false")

    response = process(app.test_client(), None, {"service": "echo", "payload": {"n": 1}})

    assert response.status_code == 200
    (hit,) = upstream.hits
    assert "authorization" not in hit.headers
    assert "x-clerk-user-id" not in hit.headers
    assert hit.headers["x-request-id"] == response.get_json()["request_id"]


def test_process_clerk_disabled_ignores_client_authorization_and_identity(
    make_app: Callable[..., Flask], guard_env: dict[str, str], upstream: Upstream
) -> None:
    app = make_app(**guard_env, CLERK_ENABLED="false")

    response = process(
        app.test_client(),
        "client-made-up-token",
        {"service": "echo", "payload": {}},
        {"X-Clerk-User-Id": "user_mallory"},
    )

    assert response.status_code == 200
    (hit,) = upstream.hits
    assert "authorization" not in hit.headers
    assert "x-clerk-user-id" not in hit.headers


def test_list_guards_names_services_and_circuits_without_urls(
    guard_app: Flask, mint: Callable[..., str]
) -> None:
    response = guard_app.test_client().get(
        "/api/v1/guards", headers={"Authorization": f"Bearer {mint('user_a')}"}
    )

    assert response.status_code == 200
    services = response.get_json()["services"]
    assert [s["name"] for s in services][:3] == ["echo", "teapot", "created"]
    assert {s["circuit"] for s in services} == {"closed"}
    assert all(set(s) == {"name", "circuit"} for s in services)
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_process_writes_guard_request_rows_linked_to_local_user(
    guard_app: Flask, mint: Callable[..., str]
) -> None:
    with guard_app.app_context():
        user = User(clerk_user_id="user_known", email="known@example.com")
        db.session.add(user)
        db.session.commit()
        known_id = user.id
    client = guard_app.test_client()

    calls = [
        ("user_known", "echo"),
        ("user_stranger", "teapot"),
        ("user_known", "down"),
        ("user_known", "nope"),
    ]
    ids = {
        process(client, mint(user), {"service": service, "payload": {}}).headers["X-Request-ID"]: n
        for n, (user, service) in enumerate(calls, 1)
    }
    flush_audit(guard_app)

    with guard_app.app_context():
        rows = sorted(db.session.scalars(select(GuardRequest)), key=lambda r: ids[r.request_id])
        got = [
            (r.request_id, r.user_id, r.clerk_user_id, r.service, r.status_code, r.outcome)
            for r in rows
        ]
        latencies = [r.latency_ms for r in rows]
    assert [(ids[request_id], *rest) for request_id, *rest in got] == [
        (1, known_id, "user_known", "echo", 200, "ok"),
        (2, None, "user_stranger", "teapot", 418, "ok"),
        (3, known_id, "user_known", "down", None, "guard_unavailable"),
        (4, known_id, "user_known", "nope", None, "guard_unknown"),
    ]
    assert latencies[0] > 0


def test_process_unknown_service_name_past_column_length_is_404_and_recorded_truncated(
    guard_app: Flask, mint: Callable[..., str]
) -> None:
    name = "n" * 63 + "\x00" + "x" * 200  # the client's; longer than guard_requests.service

    response = process(
        guard_app.test_client(),
        mint("user_long"),
        {"service": name, "payload": {}},
        {"X-Request-ID": "r-long"},
    )
    flush_audit(guard_app)

    assert response.status_code == 404
    assert response.get_json()["code"] == "guard_unknown"
    with guard_app.app_context():
        rows = db.session.execute(select(GuardRequest.service, GuardRequest.outcome)).all()
    assert [tuple(r) for r in rows] == [("n" * 63 + "\ufffd", "guard_unknown")]


def test_list_guards_clerk_disabled_answers_without_session(
    make_app: Callable[..., Flask], guard_env: dict[str, str]
) -> None:
    app = make_app(**guard_env, CLERK_ENABLED="false")

    response = app.test_client().get("/api/v1/guards")

    assert response.status_code == 200
    assert response.get_json()["services"][0] == {"name": "echo", "circuit": "closed"}


def test_process_unreachable_guard_url_query_never_logged(
    make_app: Callable[..., Flask],
    guard_env: dict[str, str],
    closed_port: int,
    mint: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Some hosted functions take their key in the URL (Azure Functions' ?code=...).
    url = f"http://127.0.0.1:{closed_port}/check?code=guard-url-secret"
    app = make_app(**(guard_env | {"GUARD_SERVICES": f"keyed={url}"}))
    caplog.set_level(logging.DEBUG)

    response = process(app.test_client(), mint("user_a"), {"service": "keyed", "payload": {}})

    assert response.status_code == 503
    assert "guard-url-secret" not in caplog.text
