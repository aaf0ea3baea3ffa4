"""GUARD_REQUIRES_SUBSCRIPTION and X-Subscription-Status (CONTRACT 4.3, 4.11) against a real
loopback upstream; the subscription is set on the user row as the Stripe worker would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select, update

from gateway.billing.entitlement import CACHE_KEY, StatusCache
from gateway.extensions import db
from gateway.models import GuardRequest, User
from gateway.webhooks.service import DatabaseUnavailable
from tests.gateway.guards.conftest import flush_audit
from tests.gateway.guards.upstream import Upstream
from tests.support.processes import free_port
from tests.support.stripe_events import SECRET

pytestmark = pytest.mark.usefixtures("upstream")


@pytest.fixture
def gated_app(make_app: Callable[..., Flask], guard_env: dict[str, str]) -> Flask:
    return make_app(
        **guard_env,
        GUARD_REQUIRES_SUBSCRIPTION="teapot,echo",
        STRIPE_WEBHOOK_SECRET=SECRET,
    )


def add(app: Flask, clerk_user_id: str, status: str | None) -> None:
    with app.app_context():
        db.session.add(
            User(
                clerk_user_id=clerk_user_id,
                email=f"{clerk_user_id}@example.com",
                stripe_customer_id=f"cus_{clerk_user_id}",
                subscription_status=status,
            )
        )
        db.session.commit()


def call(app: Flask, token: str, service: str = "echo", **headers: str):
    return app.test_client().post(
        "/api/v1/guards/process",
        json={"service": service, "payload": {}},
        headers={"Authorization": f"Bearer {token}", **headers},
    )


@pytest.mark.parametrize("status", ["active", "trialing"])
def test_gated_guard_entitled_status_called_with_header(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str], status: str
) -> None:
    add(gated_app, "user_paid", status)

    response = call(gated_app, mint("user_paid"))

    assert response.status_code == 200
    (hit,) = upstream.hits
    assert hit.headers["x-subscription-status"] == status


@pytest.mark.parametrize(
    "status", [None, "canceled", "past_due", "unpaid", "incomplete", "incomplete_expired", "paused"]
)
def test_gated_guard_without_entitled_subscription_is_402_upstream_not_called(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str], status: str | None
) -> None:
    add(gated_app, "user_unpaid", status)

    response = call(gated_app, mint("user_unpaid"))

    assert response.status_code == 402
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "subscription_required"
    assert upstream.hits == []


def test_gated_guard_unknown_user_is_402(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    assert call(gated_app, mint("user_nobody")).status_code == 402
    assert upstream.hits == []


def test_client_sent_subscription_header_neither_opens_the_gate_nor_is_forwarded(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    add(gated_app, "user_forger", None)
    token = mint("user_forger")

    gated = call(gated_app, token, "echo", **{"X-Subscription-Status": "active"})
    open_guard = call(gated_app, token, "created", **{"X-Subscription-Status": "active"})

    assert (gated.status_code, open_guard.status_code) == (402, 200)
    (hit,) = upstream.hits
    assert "x-subscription-status" not in hit.headers


def test_ungated_guard_gets_status_header_whatever_it_is(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    add(gated_app, "user_late", "past_due")

    response = call(gated_app, mint("user_late"), "created")

    assert response.status_code == 200
    assert upstream.hits[0].headers["x-subscription-status"] == "past_due"


def test_refusals_recorded_in_guard_audit(gated_app: Flask, mint: Callable[..., str]) -> None:
    add(gated_app, "user_audit", "canceled")

    # Audit rows carry the gateway's own request id, never the client's X-Request-ID.
    request_id = call(gated_app, mint("user_audit"), "teapot").headers["X-Request-ID"]
    flush_audit(gated_app)

    with gated_app.app_context():
        row = db.session.scalar(select(GuardRequest).where(GuardRequest.request_id == request_id))
        assert (row.service, row.status_code, row.outcome) == (
            "teapot",
            None,
            "subscription_required",
        )
        assert row.user_id is not None


def test_without_stripe_webhooks_or_gates_no_status_read_no_header(
    guard_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    # No STRIPE_WEBHOOK_SECRET and no gated guard: subscriptions cannot be known here, and the
    # guard route does not pay a database read per call for them.
    add(guard_app, "user_plain", "active")

    assert call(guard_app, mint("user_plain")).status_code == 200
    assert "x-subscription-status" not in upstream.hits[0].headers


def test_database_down_gated_is_503_ungated_forwarded_without_header(
    make_app: Callable[..., Flask],
    guard_env: dict[str, str],
    upstream: Upstream,
    mint: Callable[..., str],
) -> None:
    app = make_app(
        **guard_env,
        GUARD_REQUIRES_SUBSCRIPTION="echo",
        STRIPE_WEBHOOK_SECRET=SECRET,
        DATABASE_URL=f"postgresql://root:root@127.0.0.1:{free_port()}/nowhere",
    )
    token = mint("user_any")

    gated = call(app, token, "echo")
    ungated = call(app, token, "created")

    assert (gated.status_code, gated.get_json()["code"]) == (503, "database_unavailable")
    assert ungated.status_code == 200
    (hit,) = upstream.hits
    assert "x-subscription-status" not in hit.headers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_status_cache_serves_within_ttl_then_reads_again() -> None:
    clock = FakeClock()
    cache = StatusCache(ttl_seconds=1.0, clock=clock)
    reads: list[str] = []

    def read(user_id: str) -> str:
        reads.append(user_id)
        return f"status-{len(reads)}"

    first = cache.status_of("user_a", read)
    clock.now += 0.9
    cached = cache.status_of("user_a", read)
    clock.now += 0.1
    fresh = cache.status_of("user_a", read)

    assert (first, cached, fresh) == ("status-1", "status-1", "status-2")
    assert cache.status_of(None, read) is None
    assert reads == ["user_a", "user_a"]


def test_status_cache_bounded_and_failures_not_cached() -> None:
    cache = StatusCache(max_entries=2, clock=FakeClock())
    calls = {"n": 0}

    def failing(user_id: str) -> str:
        calls["n"] += 1
        raise DatabaseUnavailable()

    for _ in range(2):
        with pytest.raises(DatabaseUnavailable):
            cache.status_of("user_x", failing)
    for user_id in ("a", "b", "c"):
        cache.status_of(user_id, lambda u: "active")

    assert calls["n"] == 2
    assert len(cache._entries) <= 2


def test_gate_follows_a_change_once_the_cached_status_expires(
    gated_app: Flask, upstream: Upstream, mint: Callable[..., str]
) -> None:
    clock = FakeClock()
    gated_app.extensions[CACHE_KEY] = StatusCache(clock=clock)
    add(gated_app, "user_flip", "active")
    token = mint("user_flip")
    assert call(gated_app, token).status_code == 200
    with gated_app.app_context():
        db.session.execute(
            update(User)
            .where(User.clerk_user_id == "user_flip")
            .values(subscription_status="canceled")
        )
        db.session.commit()

    within = call(gated_app, token)
    clock.now += StatusCache.TTL_SECONDS
    after = call(gated_app, token)

    assert (within.status_code, after.status_code) == (200, 402)
    assert len(upstream.hits) == 2
