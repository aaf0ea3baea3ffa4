"""Guard upstreams on loopback; Clerk session tokens come from tests/support/clerk.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.guards.runtime import guard_runtime
from tests.gateway.guards.upstream import GUARD_TIMEOUT, Upstream
from tests.support.clerk import ISSUER, ClerkKeys, mint_token
from tests.support.processes import free_port


@pytest.fixture(scope="session")
def public_pem(clerk_keys: ClerkKeys) -> str:
    """CLERK_JWT_KEY for the test Clerk instance: verification with no network at all."""
    return clerk_keys.primary.public_pem


@pytest.fixture
def mint(clerk_keys: ClerkKeys) -> Callable[..., str]:
    """mint("user_1", email=...) -> a Clerk-shaped RS256 session token for that user."""

    def mint_for(sub: str, **claims: Any) -> str:
        return mint_token(clerk_keys.primary, user_id=sub, **claims)

    return mint_for


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    if server.gate is not None:
        server.gate.set()
    server.stop()


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound then released: nothing listens there


@pytest.fixture
def guard_env(upstream: Upstream, closed_port: int, public_pem: str) -> dict[str, str]:
    services = {
        "echo": upstream.url("/echo"),
        "teapot": upstream.url("/status/418"),
        "created": upstream.url("/status/201"),
        "failing": upstream.url("/status/500"),
        "html": upstream.url("/text"),
        "slow": upstream.url("/slow"),
        "flaky": upstream.url("/flaky"),
        "redirect": upstream.url("/status/302"),
        "down": f"http://127.0.0.1:{closed_port}/check",
    }
    return {
        "GUARD_SERVICES": ",".join(f"{name}={url}" for name, url in services.items()),
        "GUARD_TIMEOUT_SECONDS": GUARD_TIMEOUT,
        "CLERK_JWT_KEY": public_pem,
        "CLERK_ISSUER": ISSUER,
    }


@pytest.fixture
def make_app(make_app: Callable[..., Flask]) -> Iterator[Callable[..., Flask]]:
    """The root make_app, plus: queued audit rows are written before the tables are truncated."""
    apps: list[Flask] = []

    def make(*args: Any, **kwargs: Any) -> Flask:
        app = make_app(*args, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        assert app.extensions["guards"].flush_audit(timeout=10)


@pytest.fixture
def guard_app(make_app: Callable[..., Flask], guard_env: dict[str, str]) -> Flask:
    return make_app(**guard_env)


def flush_audit(app: Flask) -> None:
    assert guard_runtime(app).audit.flush(timeout=10), "guard audit rows were not written in time"
