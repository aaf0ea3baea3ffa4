"""Hostile input never costs another user (CONTRACT 3, 4.3): non-finite numbers, circuits, audit."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from sqlalchemy import select

from gateway.extensions import db
from gateway.guards.audit import GuardAuditWriter, GuardRequestRecord
from gateway.models import GuardRequest
from tests.gateway.guards.conftest import flush_audit
from tests.gateway.guards.test_routes import process
from tests.gateway.guards.upstream import Upstream
from tests.support.clerk import ISSUER


@pytest.fixture
def strict_app(make_app: Callable[..., Flask], guard_env: dict[str, str], upstream: Upstream):
    services = guard_env["GUARD_SERVICES"] + f",strict={upstream.url('/strict')}"
    return make_app(
        **(guard_env | {"GUARD_SERVICES": services}),
        GUARD_CIRCUIT_FAILURES="3",
        GUARD_CIRCUIT_RESET_SECONDS="60",
    )


def _post_raw(app: Flask, token: str, raw: str):
    return app.test_client().post(
        "/api/v1/guards/process",
        data=raw,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "[1, 2e400]", '{"a": NaN}']
)
def test_process_non_finite_number_is_invalid_body_never_forwarded(
    strict_app: Flask, upstream: Upstream, mint: Callable[..., str], literal: str
) -> None:
    raw = '{"service": "strict", "payload": {"x": LITERAL}}'.replace("LITERAL", literal)
    response = _post_raw(strict_app, mint("user_mallory"), raw)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.get_json(force=True)["code"] == "invalid_body"
    assert upstream.hits == []


def test_process_one_callers_failing_input_never_opens_circuit_for_another_user(
    strict_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    """The finding: three calls whose input made the guard answer 5xx opened its circuit for all."""
    mallory = mint("user_mallory")
    codes = [
        process(
            strict_app.test_client(), mallory, {"service": "strict", "payload": {"poison": 1}}
        ).get_json()["code"]
        for _ in range(10)
    ]
    assert codes == ["guard_upstream_error"] * 10  # each reached the guard, none was refused

    response = process(
        strict_app.test_client(), mint("user_alice"), {"service": "strict", "payload": {}}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert upstream.count("/strict") == 11


def test_one_callers_failing_input_never_makes_biasguard_skip_or_refuse_others_logins(
    make_app: Callable[..., Flask], upstream: Upstream, public_pem: str, mint: Callable[..., str]
) -> None:
    """The finding: BiasGuard at login shares the circuit, so once one user opened it every login
    skipped BiasGuard (fail-open) or failed (fail-closed)."""
    app = make_app(
        CLERK_JWT_KEY=public_pem,
        CLERK_ISSUER=ISSUER,
        GUARD_SERVICES=f"biasguard={upstream.url('/strict')}",
        BIASGUARD_ON_LOGIN="true",
        BIASGUARD_FAIL_CLOSED="true",
        GUARD_CIRCUIT_FAILURES="3",
        GUARD_CIRCUIT_RESET_SECONDS="60",
    )
    mallory = mint("user_mallory")
    for _ in range(6):
        poisoned = process(
            app.test_client(), mallory, {"service": "biasguard", "payload": {"poison": 1}}
        )
        assert poisoned.get_json()["code"] == "guard_upstream_error"

    login = app.test_client().post(
        "/api/v1/auth/login", headers={"Authorization": f"Bearer {mint('user_alice')}"}
    )
    assert login.status_code == 200, login.get_data(as_text=True)
    assert login.get_json()["biasguard"]["decision"] == "allowed"


def test_process_failures_of_distinct_users_still_open_the_circuit(
    strict_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    for user in ("user_a", "user_b", "user_c"):
        response = process(
            strict_app.test_client(), mint(user), {"service": "strict", "payload": {"poison": 1}}
        )
        assert response.get_json()["code"] == "guard_upstream_error"

    refused = process(
        strict_app.test_client(), mint("user_d"), {"service": "strict", "payload": {}}
    )
    assert refused.status_code == 503 and refused.get_json()["code"] == "guard_unavailable"
    assert upstream.count("/strict") == 3


def test_process_lone_surrogate_service_name_loses_no_audit_row_of_any_caller(
    strict_app: Flask, mint: Callable[..., str]
) -> None:
    """The finding: a service name with a lone surrogate failed its audit batch, and the batch,
    other users' rows included, was dropped."""
    alice, mallory = mint("user_alice"), mint("user_mallory")

    def alice_call(_: int) -> int:
        return process(
            strict_app.test_client(), alice, {"service": "echo", "payload": {}}
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        alice_calls = pool.map(alice_call, range(12))
        hostile = [
            _post_raw(strict_app, mallory, f'{{"service": "{name}", "payload": {{}}}}')
            for name in ("\\ud800", "x\\udfff\\u0000y", "\\udc00" * 100)
        ]
        assert list(alice_calls) == [200] * 12
    assert [r.get_json(force=True)["code"] for r in hostile] == ["guard_unknown"] * 3

    flush_audit(strict_app)
    with strict_app.app_context():
        rows = db.session.execute(select(GuardRequest.clerk_user_id, GuardRequest.service)).all()
    assert sorted(r.clerk_user_id for r in rows) == ["user_alice"] * 12 + ["user_mallory"] * 3
    assert all(len(r.service) <= 64 for r in rows)


def test_audit_writer_one_unstorable_row_never_takes_its_batch_down(app: Flask) -> None:
    writer = GuardAuditWriter(app, batch_size=50)
    writer.submit(GuardRequestRecord("user_a", "echo", 2**40, "ok", 1.0, "too-big-status"))
    writer.submit(GuardRequestRecord("user_\udfff", "\ud800", None, "guard_unknown", 0.0, "r-s"))
    for i in range(9):
        writer.submit(GuardRequestRecord("user_b", "echo", 200, "ok", 1.0, f"r{i}"))

    assert writer.flush(10)
    assert (writer.written, writer.dropped) == (10, 1)
    with app.app_context():
        ids = set(db.session.scalars(select(GuardRequest.request_id)))
    assert ids == {"r-s"} | {f"r{i}" for i in range(9)}
