"""Signing keys: a PEM key, or a per-process JWKS cache shared by threads (single flight)."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import RSAAlgorithm

from gateway.auth.token_problems import JwkKidMismatch, JwkRemoteFailedToLoad, TokenInvalid
from gateway.config import ConfigError

log = logging.getLogger(__name__)

FETCH_TIMEOUT = urllib3.Timeout(connect=3.0, read=3.0)
MAX_JWKS_BYTES = 256 * 1024
# After a failed fetch no other fetch starts for this long: with no key at all requests answer 503
# at once, with stale keys they keep serving, instead of queueing on a dead Clerk in turn.
FAILURE_BACKOFF_SECONDS = 2.0


class StaticKey:
    """One key for every token: CLERK_JWT_KEY (PEM, no network ever) or the dev-mode key."""

    def __init__(self, key: Any) -> None:
        self.key = key

    @classmethod
    def from_pem(cls, pem: str) -> StaticKey:
        key = load_pem_public_key(pem.encode())
        if not isinstance(key, RSAPublicKey):
            raise ConfigError("CLERK_JWT_KEY", "expected an RSA public key")
        return cls(key)

    def get_key(self, kid: str | None) -> Any:
        return self.key


class NoKeySource:
    """CLERK_ENABLED with no way to get a key: every verification is a 503 naming the fix."""

    def get_key(self, kid: str | None) -> Any:
        raise JwkRemoteFailedToLoad(
            "No Clerk key is configured: set CLERK_PUBLISHABLE_KEY, CLERK_JWKS_URL, "
            "CLERK_JWT_KEY or CLERK_SECRET_KEY."
        )


def fetch_jwks_over_http(
    url: str, headers: Mapping[str, str] | None = None, pool: urllib3.PoolManager | None = None
) -> Callable[[], dict[str, Any]]:
    """A fetcher for JwksCache: short timeouts, bounded body, no redirects to elsewhere."""
    pool = pool or urllib3.PoolManager(num_pools=2, maxsize=2, retries=False)

    def fetch() -> dict[str, Any]:
        response = pool.request(
            "GET",
            url,
            headers={"Accept": "application/json", **(headers or {})},
            timeout=FETCH_TIMEOUT,
            redirect=False,
            preload_content=False,
        )
        try:
            if response.status != 200:
                raise OSError(f"JWKS answered {response.status}")
            body = response.read(MAX_JWKS_BYTES + 1)
        finally:
            response.release_conn()
        if len(body) > MAX_JWKS_BYTES:
            raise OSError("JWKS too large")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("JWKS is not an object")
        return document

    return fetch


class JwksCache:
    """The keys of one JWKS, fetched by one thread at a time and shared by all.

    - fresh for `cache_seconds`; after that the stale keys keep serving while one background
      refresh runs (stale-if-error: a failed refresh keeps them);
    - an unknown kid triggers at most one fetch per `cooldown_seconds`, whatever the request rate,
      so a flood of made-up kids never floods Clerk; callers that arrive while a fetch is in
      flight wait for it rather than start another.
    PyJWKClient is not used: it holds its lock across the fetch and drops its keys once their
    lifespan ends even when Clerk cannot be reached.
    """

    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        cache_seconds: float = 300,
        cooldown_seconds: float = 30,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = 10.0,
    ) -> None:
        self._fetch = fetch
        self.cache_seconds = cache_seconds
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._last_kid_fetch: float | None = None
        self._last_fetch_started: float | None = None
        self._failed_until = 0.0
        self._in_flight: threading.Event | None = None
        self.fetch_count = 0

    def get_key(self, kid: str | None) -> Any:
        if kid is None:
            raise TokenInvalid("The session token has no kid header.")
        now = self._clock()
        with self._lock:
            fetched_at = self._fetched_at
        if fetched_at is None:
            self._refresh(wait=True)
        elif now - fetched_at >= self.cache_seconds:
            self._refresh(wait=False)  # serve the stale keys meanwhile
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys:
            raise JwkRemoteFailedToLoad()
        if self._may_fetch_for_unknown_kid(now):
            self._refresh(wait=True)
            key = self._keys.get(kid)
            if key is not None:
                return key
        raise JwkKidMismatch()

    def _may_fetch_for_unknown_kid(self, now: float) -> bool:
        with self._lock:
            if self._in_flight is not None:
                return True  # joining a fetch in flight costs Clerk nothing
            # Any fetch counts: keys loaded a moment ago already hold every kid Clerk publishes.
            last = max(self._last_kid_fetch or -math.inf, self._last_fetch_started or -math.inf)
            if now - last < self.cooldown_seconds:
                return False
            self._last_kid_fetch = now
            return True

    def _refresh(self, *, wait: bool) -> None:
        with self._lock:
            event = self._in_flight
            owner = event is None
            if owner:
                if self._clock() < self._failed_until:
                    return
                event = self._in_flight = threading.Event()
                self._last_fetch_started = self._clock()
        assert event is not None
        if not owner:
            if wait:
                event.wait(self._wait_seconds)
            return
        if wait:
            self._fetch_and_store(event)
        else:
            threading.Thread(
                target=self._fetch_and_store, args=(event,), name="jwks-refresh", daemon=True
            ).start()

    def _fetch_and_store(self, event: threading.Event) -> None:
        try:
            self.fetch_count += 1
            keys = parse_jwks(self._fetch())
            if not keys:
                raise ValueError("JWKS holds no usable RS256 key")
            with self._lock:
                self._keys = keys
                self._fetched_at = self._clock()
        except Exception as exc:  # noqa: BLE001 - any fetch fault: keep the keys we have
            log.warning("JWKS fetch failed: %s", type(exc).__name__)
            with self._lock:
                self._failed_until = self._clock() + FAILURE_BACKOFF_SECONDS
        finally:
            with self._lock:
                self._in_flight = None
            event.set()


def parse_jwks(document: dict[str, Any]) -> dict[str, Any]:
    """kid -> public key for every RSA signing key; anything else in the set is skipped."""
    keys: dict[str, Any] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        return keys
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[kid] = RSAAlgorithm.from_jwk(json.dumps(entry))
        except Exception:  # noqa: BLE001 - one malformed key must not hide the others
            log.warning("JWKS key %s skipped: unusable", kid[:32])
    return keys
