"""CircuitBreaker on its own, with a hand-driven clock, and through the routes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from gateway.guards import runtime as guards_runtime
from gateway.guards.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tests.gateway.guards.test_routes import process
from tests.gateway.guards.upstream import Upstream
from tests.support.polling import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, success=False)


def test_circuit_breaker_consecutive_failures_open_it() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=30, clock=Clock())
    fail(breaker, 2)
    assert breaker.state == CLOSED
    fail(breaker, 1)

    assert breaker.state == OPEN
    assert breaker.acquire() is None
    assert breaker.retry_after() == 30


def test_circuit_breaker_success_resets_the_failure_run() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=30, clock=Clock())
    fail(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record(permit, success=True)
    fail(breaker, 2)

    assert breaker.state == CLOSED


def test_circuit_breaker_after_reset_lets_exactly_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_seconds=30, clock=clock)
    fail(breaker, 1)
    clock.now += 30
    assert breaker.state == HALF_OPEN

    with ThreadPoolExecutor(16) as pool:
        permits = list(pool.map(lambda _: breaker.acquire(), range(64)))

    granted = [p for p in permits if p is not None]
    assert len(granted) == 1 and granted[0].trial
    assert breaker.state == HALF_OPEN
    breaker.record(granted[0], success=True)
    assert breaker.state == CLOSED


def test_circuit_breaker_failed_trial_reopens_for_a_full_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, reset_seconds=30, clock=clock)
    fail(breaker, 2)
    clock.now += 31
    trial = breaker.acquire()
    assert trial is not None
    breaker.record(trial, success=False)

    assert breaker.state == OPEN
    clock.now += 29
    assert breaker.acquire() is None
    clock.now += 1
    assert breaker.acquire() is not None


def test_circuit_breaker_one_callers_failures_count_once_unreachable_counts_each() -> None:
    breaker = CircuitBreaker(failures=3, reset_seconds=30, clock=Clock())
    for _ in range(10):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, success=False, caller="user_mallory")
    assert breaker.state == CLOSED
    for caller in ("user_b", None):  # None: the guard could not be reached, no input to blame
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, success=False, caller=caller)
    assert breaker.state == OPEN


def test_circuit_breaker_late_result_of_an_old_call_does_not_free_the_trial_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_seconds=30, clock=clock)
    old = breaker.acquire()  # in flight while the circuit opens
    fail(breaker, 1)
    clock.now += 30
    trial = breaker.acquire()
    assert trial is not None and trial.trial

    assert old is not None
    breaker.record(old, success=False)

    assert breaker.acquire() is None  # still one trial at a time


def circuit(app: Flask, token: str, name: str) -> str:
    """The circuit state of one service, as GET /api/v1/guards shows it."""
    services = (
        app.test_client()
        .get("/api/v1/guards", headers={"Authorization": f"Bearer {token}"})
        .get_json()["services"]
    )
    return {s["name"]: s["circuit"] for s in services}[name]


def with_clock(app: Flask) -> Clock:
    """Give the app's circuits a hand-driven clock (before its first guard call)."""
    clock = Clock()
    guards_runtime.init_app(app, clock)
    return clock


def test_process_consecutive_upstream_failures_open_circuit_and_stop_calls(
    make_app: Callable[..., Flask],
    guard_env: dict[str, str],
    upstream: Upstream,
    mint: Callable[..., str],
) -> None:
    app = make_app(**guard_env, GUARD_CIRCUIT_FAILURES="3", GUARD_CIRCUIT_RESET_SECONDS="60")
    client, token = app.test_client(), mint("user_a")
    upstream.failing = True

    # Distinct users: one caller's failures count once (test_hostile_input.py).
    responses = [
        process(client, mint(f"user_{n}"), {"service": "flaky", "payload": {}}) for n in range(8)
    ]

    codes = [response.get_json()["code"] for response in responses]
    assert codes == ["guard_upstream_error"] * 3 + ["guard_unavailable"] * 5
    assert 55 <= int(responses[-1].headers["Retry-After"]) <= 60
    assert upstream.count("/flaky") == 3
    assert circuit(app, token, "flaky") == "open"
    # Other services keep their own circuits.
    assert process(client, token, {"service": "echo", "payload": {}}).status_code == 200


def test_process_timeouts_and_connect_errors_count_against_the_circuit(
    make_app: Callable[..., Flask], guard_env: dict[str, str], mint: Callable[..., str]
) -> None:
    app = make_app(**guard_env, GUARD_CIRCUIT_FAILURES="2", GUARD_CIRCUIT_RESET_SECONDS="60")
    client, token = app.test_client(), mint("user_a")

    for service, code in (("down", "guard_unavailable"), ("slow", "guard_timeout")):
        # A timeout may be the caller's input: distinct users (test_hostile_input.py).
        codes = [
            process(client, mint(f"user_{n}"), {"service": service, "payload": {}}).get_json()[
                "code"
            ]
            for n in range(3)
        ]
        assert codes[:2] == [code, code]
        assert codes[2] == "guard_unavailable"
        assert circuit(app, token, service) == "open"


def test_process_half_open_sends_one_trial_and_its_success_closes_circuit(
    make_app: Callable[..., Flask],
    guard_env: dict[str, str],
    upstream: Upstream,
    mint: Callable[..., str],
) -> None:
    app = make_app(**guard_env, GUARD_CIRCUIT_FAILURES="2", GUARD_CIRCUIT_RESET_SECONDS="30")
    clock = with_clock(app)
    token = mint("user_a")
    upstream.failing = True
    for n in range(2):  # distinct users: one caller's failures count once
        process(app.test_client(), mint(f"user_{n}"), {"service": "flaky", "payload": {}})
    assert circuit(app, token, "flaky") == "open"
    clock.now += 30
    assert circuit(app, token, "flaky") == "half_open"
    upstream.failing = False
    upstream.gate = threading.Event()  # hold the trial inside the upstream

    with ThreadPoolExecutor(1) as pool:
        trial = pool.submit(process, app.test_client(), token, {"service": "flaky", "payload": {}})
        wait_until(lambda: upstream.count("/flaky") == 3, interval=0.01)
        # While the trial is in flight, everyone else is refused without touching the upstream.
        others = [
            process(app.test_client(), token, {"service": "flaky", "payload": {}}) for _ in range(5)
        ]
        assert upstream.count("/flaky") == 3
        upstream.gate.set()
        trial_response = trial.result(timeout=10)

    assert [r.get_json()["code"] for r in others] == ["guard_unavailable"] * 5
    assert trial_response.status_code == 200
    assert circuit(app, token, "flaky") == "closed"
    assert process(app.test_client(), token, {"service": "flaky", "payload": {}}).status_code == 200
    assert upstream.count("/flaky") == 4


def test_process_failed_half_open_trial_reopens_circuit(
    make_app: Callable[..., Flask],
    guard_env: dict[str, str],
    upstream: Upstream,
    mint: Callable[..., str],
) -> None:
    app = make_app(**guard_env, GUARD_CIRCUIT_FAILURES="2", GUARD_CIRCUIT_RESET_SECONDS="30")
    clock = with_clock(app)
    client, token = app.test_client(), mint("user_a")
    upstream.failing = True
    for n in range(2):  # distinct users: one caller's failures count once
        process(client, mint(f"user_{n}"), {"service": "flaky", "payload": {}})
    assert circuit(app, token, "flaky") == "open"
    clock.now += 30
    assert circuit(app, token, "flaky") == "half_open"

    trial = process(client, token, {"service": "flaky", "payload": {}})
    after = process(client, token, {"service": "flaky", "payload": {}})

    assert trial.get_json()["code"] == "guard_upstream_error"
    assert after.get_json()["code"] == "guard_unavailable"
    assert upstream.count("/flaky") == 3
    assert circuit(app, token, "flaky") == "open"
