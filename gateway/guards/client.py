"""Pooled HTTP calls to guard services: per-request headers, bounded time, a circuit per service."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from gateway.auth.claims import SessionClaims
from gateway.errors import Problem
from gateway.guards.circuit import CircuitBreaker
from gateway.guards.problems import (
    GuardTimeout,
    GuardUnavailable,
    GuardUpstreamError,
)
from gateway.guards.registry import GuardRegistry, GuardService
from gateway.strict_json import STRICT

# A guard answers a verdict, not a file; past this the answer is treated as a fault, not buffered.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = "clerk-gateway-guards/1"
# Visible ASCII and inner spaces: what a header value may carry without encoding or injection.
_HEADER_VALUE_RE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
# One permission in the comma-separated header: visible ASCII without the separator.
_PERMISSION_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")


@dataclass(frozen=True)
class GuardOutcome:
    """What one upstream call came to. `problem` is None for a 2xx/4xx JSON answer."""

    service: str
    status_code: int | None  # the upstream's; None when it never answered
    data: Any
    latency_ms: float
    problem: Problem | None = None

    @property
    def outcome(self) -> str:
        return "ok" if self.problem is None else self.problem.code


class GuardClient:
    """One per process, shared by its threads: the connection pools and the circuit breakers.

    Nothing here holds per-request state. Headers are built for each call from the values the caller
    passes in, so one request's token can never be seen by another (the design this replaces
    mutated a shared service config per request and leaked tokens between concurrent users).
    """

    def __init__(
        self,
        registry: GuardRegistry,
        *,
        timeout_seconds: float,
        circuit_failures: int,
        circuit_reset_seconds: float,
        pool_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.breakers = {
            service.name: CircuitBreaker(circuit_failures, circuit_reset_seconds, clock)
            for service in registry
        }
        # `total`: connecting plus waiting for the answer stay within GUARD_TIMEOUT_SECONDS. urllib3
        # applies what connecting left as a per-read socket timeout, so a body that trickles in
        # byte by byte is bounded per read, not in total (guards answer small JSON at once).
        self._timeout = urllib3.Timeout(total=timeout_seconds)
        # A connect error means the request never left: safe to retry once even for a POST. Read
        # errors are not retried (the guard may have acted), redirects are not followed (a guard
        # that redirects could point us anywhere).
        self._retries = urllib3.Retry(
            total=None, connect=1, read=0, redirect=0, status=0, other=0, raise_on_status=False
        )
        # maxsize = the process's threads: each thread can hold a kept-alive connection per
        # upstream host; block=False lets a burst open extra connections instead of queueing.
        self._pools = urllib3.PoolManager(
            num_pools=max(len(registry), 1) + 2,
            maxsize=pool_size,
            block=False,
            retries=self._retries,
            timeout=self._timeout,
        )

    def circuit_states(self) -> list[dict[str, str]]:
        return [
            {"name": service.name, "circuit": self.breakers[service.name].state}
            for service in self.registry
        ]

    def call(
        self,
        name: str,
        payload: Any,
        *,
        token: str | None,
        session: SessionClaims | None,
        request_id: str,
        subscription_status: str | None = None,
    ) -> GuardOutcome:
        """POST payload to the named guard. Raises GuardUnknown; upstream faults are outcomes."""
        service = self.registry.get(name)
        breaker = self.breakers[name]
        permit = breaker.acquire()
        if permit is None:
            refused: Problem = GuardUnavailable(
                "The guard has been failing; calls to it are paused (circuit open).",
                headers={"Retry-After": str(breaker.retry_after())},
            )
            return GuardOutcome(name, None, None, 0.0, refused)
        started = time.perf_counter()
        healthy = False
        problem: Problem | None = None
        try:
            status, data, problem, healthy = self._send(
                service, payload, build_headers(token, session, request_id, subscription_status)
            )
        finally:
            # Always recorded, even if something unexpected escapes: a half-open circuit whose trial
            # never reports would refuse every call forever. A guard that could not be reached
            # or did not answer in time is down for everyone (a hanging guard must open its
            # circuit); a 5xx or a dropped connection may be the caller's input (circuit.py).
            unreached = isinstance(problem, GuardUnavailable | GuardTimeout)
            caller = session.user_id if session is not None and not unreached else None
            breaker.record(permit, healthy, caller=caller)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return GuardOutcome(name, status, data, latency_ms, problem)

    def _send(
        self, service: GuardService, payload: Any, headers: dict[str, str]
    ) -> tuple[int | None, Any, Problem | None, bool]:
        """(status, data, problem, upstream healthy?) for one call."""
        # allow_nan=False: NaN/Infinity are not JSON (request bodies never carry them, app.py).
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        try:
            response = self._pools.urlopen(
                "POST",
                service.url,
                body=body,
                headers=headers,
                redirect=False,
                preload_content=False,
            )
        except MaxRetryError as exc:
            return (None, None, *_transport_problem(exc.reason or exc))
        except HTTPError as exc:
            return (None, None, *_transport_problem(exc))
        try:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        except HTTPError as exc:
            response.close()  # a half-read connection must not go back to the pool
            response.release_conn()
            return (response.status, None, *_transport_problem(exc))
        if len(raw) > MAX_RESPONSE_BYTES:
            response.close()
        response.release_conn()
        status = response.status
        if status >= 500:
            return status, None, GuardUpstreamError(f"The guard answered {status}."), False
        if len(raw) > MAX_RESPONSE_BYTES:
            return status, None, GuardUpstreamError("The guard's answer is too large."), True
        if not (200 <= status < 300 or 400 <= status < 500):
            return status, None, GuardUpstreamError(f"The guard answered {status}."), True
        if not raw.strip():
            return status, None, None, True
        try:
            # A guard's NaN would reach our client as NaN, which is not JSON either.
            data = json.loads(raw, **STRICT)
        except ValueError:
            return status, None, GuardUpstreamError("The guard did not answer JSON."), True
        return status, data, None, True


def build_headers(
    token: str | None,
    session: SessionClaims | None,
    request_id: str,
    subscription_status: str | None = None,
) -> dict[str, str]:
    """A fresh dict per call, from verified values only: nothing the client sent is copied over.

    No cookies, no hop-by-hop headers, no client X-Clerk-* or X-Subscription-Status headers:
    identity comes from the verified token (CONTRACT 4.3) and the subscription status from our
    users table (4.11), never from a header the client could forge. The organization headers are
    sent only when the session has an active organization, X-Clerk-Actor-Id only for an
    impersonation, X-Subscription-Status only when the user has a subscription; a guard reads a
    missing header as "none".
    """
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "X-Request-ID": request_id,
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if subscription_status and _HEADER_VALUE_RE.fullmatch(subscription_status):
        headers["X-Subscription-Status"] = subscription_status
    if session is None:
        return headers
    identity = {
        "X-Clerk-User-Id": session.user_id,
        "X-Clerk-Session-Id": session.session_id,
        "X-Clerk-Actor-Id": session.actor_id,
    }
    org = session.org
    if org is not None:
        identity |= {
            "X-Clerk-Org-Id": org.id,
            "X-Clerk-Org-Slug": org.slug,
            "X-Clerk-Org-Role": org.role,
        }
    for name, value in identity.items():
        # Clerk ids, slugs and permission keys are plain ASCII; anything else (a custom claim
        # template gone wrong) is left out rather than sent mangled or split into two headers.
        if value and _HEADER_VALUE_RE.fullmatch(value):
            headers[name] = value
    if org is not None and "X-Clerk-Org-Id" in headers:
        # Always with an organization, empty when the role grants nothing: "no permissions" is
        # an answer a guard can act on. Names that could not travel are left out.
        headers["X-Clerk-Org-Permissions"] = ",".join(
            p for p in org.permissions if _PERMISSION_RE.fullmatch(p)
        )
    return headers


def _transport_problem(exc: BaseException) -> tuple[Problem, bool]:
    """Map a urllib3 failure to (problem, upstream healthy?); all count against the circuit."""
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first. A connect
    # timeout is "cannot connect" (503); only an accepted call that then runs late is a 504.
    if isinstance(exc, NewConnectionError | ConnectTimeoutError | ConnectionRefusedError):
        return GuardUnavailable(), False
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return GuardTimeout(), False
    if isinstance(exc, ProtocolError):
        # It accepted the connection, then dropped it without a valid answer.
        return GuardUpstreamError("The guard closed the connection without answering."), False
    return GuardUnavailable(), False
