"""Clerk test doubles on loopback: RSA keys, minted session tokens, a JWKS server, a Backend API.

Registered as a pytest plugin from tests/conftest.py. Typical use in any test:

    def test_something(clerk_app, auth_headers):
        response = clerk_app.test_client().get("/api/v1/auth/me", headers=auth_headers("user_1"))
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from jwt.algorithms import RSAAlgorithm
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

FRONTEND_API_HOST = "clerk.gateway.test"
PUBLISHABLE_KEY = "pk_test_" + base64.b64encode(f"{FRONTEND_API_HOST}$".encode()).decode()
ISSUER = f"https://{FRONTEND_API_HOST}"
SECRET_KEY = "sk_test_gateway_tests"
AUTHORIZED_PARTY = "https://app.example.com"
JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class RsaKey:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> RsaKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @cached_property
    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return jwk | {"kid": self.kid, "alg": "RS256", "use": "sig"}

    @cached_property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


def session_claims(user_id: str = "user_123", **overrides: Any) -> dict[str, Any]:
    """Claims shaped like a Clerk v2 session token; an override of None drops the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "sid": "sess_" + user_id,
        "iss": ISSUER,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 60,
        "azp": AUTHORIZED_PARTY,
        "v": 2,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def mint_token(
    key: RsaKey,
    kid: str | None = "",
    headers: dict[str, Any] | None = None,
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    """A real RS256 session token signed by `key` (kid defaults to the key's own)."""
    header = {"kid": key.kid if kid == "" else kid} | (headers or {})
    header = {name: value for name, value in header.items() if value is not None}
    return jwt.encode(session_claims(**claims), key.private, algorithm=algorithm, headers=header)


def encode_segment(value: dict[str, Any] | bytes) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_raw(key: RsaKey, header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes) -> str:
    """RS256 over segments we build by hand (duplicate keys, strings where numbers belong)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    signature = key.private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@dataclass
class ClerkKeys:
    primary: RsaKey
    secondary: RsaKey
    attacker: RsaKey


class JwksServer:
    """Serves a JWKS on the loopback httpserver; the keys served can be swapped (rotation)."""

    def __init__(self, server: HTTPServer, keys: list[RsaKey]) -> None:
        self.server = server
        self.keys = list(keys)
        self.delay_seconds = 0.0
        self.status = 200
        # When set, every fetch waits until the test releases it (a refresh held in flight).
        self.gate: threading.Event | None = None
        server.expect_request(JWKS_PATH).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for(JWKS_PATH)

    def _handle(self, request: Request) -> Response:
        if self.gate is not None:
            self.gate.wait(60)
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        body = json.dumps({"keys": [key.public_jwk for key in self.keys]})
        return Response(body, status=self.status, content_type="application/json")

    @property
    def fetch_count(self) -> int:
        return sum(1 for request, _ in self.server.log if request.path == JWKS_PATH)


@dataclass
class ClerkBackend:
    """Clerk's Backend API (`/v1/users/<id>`, `/v1/jwks`) on the loopback httpserver."""

    server: HTTPServer
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Answers to send before the real one, e.g. [(429, {"Retry-After": "1"})].
    queued_errors: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile(r"^/v1/users/.+$")).respond_with_handler(self._user)

    @property
    def url(self) -> str:
        return self.server.url_for("/v1")

    def add_user(
        self, user_id: str, email: str, verified: bool = True, **fields: Any
    ) -> dict[str, Any]:
        """A Clerk user object as the Backend API returns it."""
        now_ms = int(time.time() * 1000)
        user = {
            "object": "user",
            "id": user_id,
            "primary_email_address_id": "idn_" + user_id,
            "email_addresses": [
                {
                    "id": "idn_" + user_id,
                    "email_address": email,
                    "verification": {"status": "verified" if verified else "unverified"},
                }
            ],
            "first_name": "Ada",
            "last_name": "Lovelace",
            "image_url": "https://img.clerk.com/ada.png",
            "public_metadata": {"plan": "pro"},
            "private_metadata": {"internal_note": "never-show-this"},
            "unsafe_metadata": {"theme": "dark"},
            "created_at": now_ms,
            "updated_at": now_ms,
        } | fields
        self.users[user_id] = user
        return user

    @property
    def user_requests(self) -> list[Request]:
        return [r for r, _ in self.server.log if r.path.startswith("/v1/users/")]

    def _user(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return Response('{"errors": [{"code": "authentication_invalid"}]}', status=401)
        if self.queued_errors:
            status, headers = self.queued_errors.pop(0)
            return Response('{"errors": []}', status=status, headers=headers)
        user = self.users.get(request.path.removeprefix("/v1/users/"))
        if user is None:
            return Response('{"errors": [{"code": "resource_not_found"}]}', status=404)
        return Response(json.dumps(user), content_type="application/json")


@pytest.fixture(scope="session")
def clerk_keys() -> ClerkKeys:
    return ClerkKeys(
        primary=RsaKey.generate("key-a"),
        secondary=RsaKey.generate("key-b"),
        # Same kid as the real key: only the signature can tell them apart.
        attacker=RsaKey.generate("key-a"),
    )


@pytest.fixture
def jwks_server(httpserver: HTTPServer, clerk_keys: ClerkKeys) -> JwksServer:
    return JwksServer(httpserver, [clerk_keys.primary])


@pytest.fixture
def clerk_backend(httpserver: HTTPServer) -> ClerkBackend:
    return ClerkBackend(httpserver)


@pytest.fixture
def clerk_env(jwks_server: JwksServer, clerk_backend: ClerkBackend) -> dict[str, str]:
    """Env overrides for a gateway that trusts the test Clerk instance (all on loopback)."""
    return {
        "CLERK_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "CLERK_JWKS_URL": jwks_server.url,
        "CLERK_SECRET_KEY": SECRET_KEY,
        "CLERK_API_URL": clerk_backend.url,
        "CLERK_AUTHORIZED_PARTIES": AUTHORIZED_PARTY,
    }


@pytest.fixture
def clerk_app(make_app: Callable[..., Flask], clerk_env: dict[str, str]) -> Flask:
    return make_app(**clerk_env)


@pytest.fixture
def auth_headers(clerk_keys: ClerkKeys) -> Callable[..., dict[str, str]]:
    """auth_headers("user_1", email="a@example.com") -> {"Authorization": "Bearer <token>"}."""

    def make(user_id: str = "user_123", **claims: Any) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {mint_token(clerk_keys.primary, user_id=user_id, **claims)}"
        }

    return make
