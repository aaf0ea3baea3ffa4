"""The JWKS cache: single flight, unknown-kid cooldown, rotation, stale-if-error, PEM mode."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from pytest_httpserver import HTTPServer

from gateway.auth.hook import get_verifier
from gateway.auth.jwks import JwksCache, fetch_jwks_over_http
from gateway.auth.token_problems import JwkKidMismatch, JwkRemoteFailedToLoad
from tests.support.clerk import JwksServer, mint_token
from tests.support.polling import wait_until
from tests.support.processes import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(server: JwksServer, clock: FakeClock, cache_seconds=300, cooldown=30) -> JwksCache:
    return JwksCache(
        fetch_jwks_over_http(server.url),
        cache_seconds=cache_seconds,
        cooldown_seconds=cooldown,
        clock=clock,
    )


def _flood(cache: JwksCache, kids: list[str]) -> list[BaseException | object]:
    barrier = threading.Barrier(len(kids))

    def one(kid: str) -> BaseException | object:
        barrier.wait(5)
        try:
            return cache.get_key(kid)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(kids)) as pool:
        return list(pool.map(one, kids))


def test_app_concurrent_random_kids_cold_cause_at_most_one_fetch(
    clerk_app, clerk_keys, jwks_server
):
    jwks_server.delay_seconds = 0.2  # keep the fetch in flight while the others arrive
    client_tokens = [
        mint_token(clerk_keys.primary, kid=f"made-up-{uuid.uuid4().hex}") for _ in range(50)
    ]
    barrier = threading.Barrier(50)

    def call(token: str) -> str:
        barrier.wait(5)
        response = clerk_app.test_client().get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        return response.get_json(force=True)["code"]

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(call, client_tokens))
    assert codes == ["jwk_kid_mismatch"] * 50
    assert jwks_server.fetch_count <= 1


def test_jwks_cache_unknown_kid_flood_fetches_once_per_cooldown(jwks_server, clerk_keys):
    clock = FakeClock()
    cache = _cache(jwks_server, clock, cooldown=30)
    assert cache.get_key("key-a") is not None
    assert jwks_server.fetch_count == 1

    clock.now += 31  # the first load no longer counts as recent
    jwks_server.delay_seconds = 0.2
    results = _flood(cache, [f"random-{n}" for n in range(50)])
    assert all(isinstance(r, JwkKidMismatch) for r in results)
    assert jwks_server.fetch_count == 2

    clock.now += 10  # still inside the cooldown: no fetch, whatever the rate
    results = _flood(cache, [f"again-{n}" for n in range(50)])
    assert all(isinstance(r, JwkKidMismatch) for r in results)
    assert jwks_server.fetch_count == 2


def test_jwks_cache_key_rotation_new_kid_found_after_cooldown(jwks_server, clerk_keys):
    clock = FakeClock()
    cache = _cache(jwks_server, clock, cooldown=30)
    assert cache.get_key("key-a") is not None
    jwks_server.keys = [clerk_keys.primary, clerk_keys.secondary]  # Clerk publishes the new key
    clock.now += 31
    assert cache.get_key("key-b") is not None
    assert jwks_server.fetch_count == 2

    jwks_server.keys = [clerk_keys.secondary]  # the old key is retired
    jwks_server.gate = threading.Event()  # hold the refresh in flight (no race with the assert)
    clock.now += 301  # past cache_seconds: a background refresh replaces the set
    assert cache.get_key("key-a") is not None  # stale keys serve while the refresh runs
    jwks_server.gate.set()
    _wait_for(lambda: jwks_server.fetch_count == 3)
    _wait_for(lambda: _raises(cache, "key-a", JwkKidMismatch))


def test_jwks_cache_server_killed_cached_keys_keep_working(clerk_keys):
    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.start()
    jwks = JwksServer(server, [clerk_keys.primary])
    clock = FakeClock()
    cache = _cache(jwks, clock, cache_seconds=300, cooldown=30)
    try:
        assert cache.get_key("key-a") is not None
    finally:
        server.clear()
        server.stop()
    clock.now += 1000  # long stale, and Clerk is unreachable
    assert cache.get_key("key-a") is not None
    _wait_for(lambda: cache.fetch_count == 2)  # the refresh was tried and failed
    assert cache.get_key("key-a") is not None
    with pytest.raises(JwkKidMismatch):
        cache.get_key("key-b")  # unknown kid is still a 401, not a 503


def test_jwks_cache_unreachable_with_no_keys_is_503():
    cache = JwksCache(fetch_jwks_over_http(f"http://127.0.0.1:{free_port()}/jwks.json"))
    with pytest.raises(JwkRemoteFailedToLoad):
        cache.get_key("key-a")


def test_app_jwks_unreachable_cold_answers_503_problem(make_app, clerk_env, clerk_keys):
    app = make_app(**(clerk_env | {"CLERK_JWKS_URL": f"http://127.0.0.1:{free_port()}/jwks"}))
    token = mint_token(clerk_keys.primary)
    response = app.test_client().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 503
    assert response.get_json(force=True)["code"] == "jwk_remote_failed_to_load"
    assert "WWW-Authenticate" not in response.headers


def test_app_jwks_server_error_answers_503_then_recovers(clerk_app, clerk_keys, jwks_server):
    jwks_server.status = 500
    headers = {"Authorization": f"Bearer {mint_token(clerk_keys.primary)}"}
    client = clerk_app.test_client()
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 503
    jwks_server.status = 200
    _wait_for(lambda: client.get("/api/v1/auth/me", headers=headers).status_code == 200)


def test_app_pem_mode_makes_no_network_call(make_app, clerk_keys, httpserver):
    app = make_app(
        CLERK_JWT_KEY=clerk_keys.primary.public_pem,
        CLERK_ISSUER="https://clerk.gateway.test",
        # Present but must be ignored: the PEM key means no JWKS at all.
        CLERK_JWKS_URL=httpserver.url_for("/.well-known/jwks.json"),
        CLERK_SECRET_KEY="sk_test_x",
        CLERK_API_URL=httpserver.url_for("/v1"),
    )
    client = app.test_client()
    ok = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {mint_token(clerk_keys.primary)}"}
    )
    assert ok.status_code == 200 and ok.get_json()["user_id"] == "user_123"
    forged = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {mint_token(clerk_keys.attacker)}"}
    )
    assert forged.get_json(force=True)["code"] == "token_invalid_signature"
    assert len(httpserver.log) == 0
    assert type(get_verifier(app).key_source).__name__ == "StaticKey"


def _raises(cache: JwksCache, kid: str, exc_type: type[Exception]) -> bool:
    try:
        cache.get_key(kid)
    except exc_type:
        return True
    return False


def _wait_for(condition, timeout: float = 30.0) -> None:
    wait_until(condition, timeout, interval=0.02)
