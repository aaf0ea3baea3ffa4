"""Guard upstreams on loopback, and Clerk session tokens signed with a real RSA key."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from gateway.guards.runtime import guard_runtime
from tests.gateway.guards.upstream import Upstream
from tests.support.processes import free_port

ISSUER = "https://clerk.guards.test"


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def public_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def mint(rsa_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """A Clerk-shaped session token (RS256) for `sub`."""

    def mint_token(sub: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "sub": sub,
            "iss": ISSUER,
            "sid": f"sess_{uuid.uuid4().hex[:12]}",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode(payload, rsa_key, algorithm="RS256", headers={"kid": "ins_test"})

    return mint_token


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
        "GUARD_TIMEOUT_SECONDS": "0.5",
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
