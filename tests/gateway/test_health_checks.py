"""/readyz and /metrics checks: one at a time per process, reused briefly, never piling up."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from gateway.health import CachedCheck


class CountingBlackHole:
    """A TCP server that accepts and never answers (a hung Redis), counting connections."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(100)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.held:
            conn.close()
        self.server.close()


@pytest.fixture
def hung_redis() -> Iterator[CountingBlackHole]:
    hole = CountingBlackHole()
    yield hole
    hole.close()


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
def test_checks_during_a_hang_run_one_at_a_time_and_never_pile_up(make_app, hung_redis, path):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{hung_redis.port}/0")

    def get(_: int) -> int:
        return app.test_client().get(path).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(get, range(24)))
    elapsed = time.monotonic() - started

    assert set(statuses) == ({503} if path == "/readyz" else {200})
    # Every caller waited on the same hung check: one connection to the broker, not one per call
    # or per pool thread, and every answer within the readiness bound (2 s) of its own.
    assert len(hung_redis.held) <= 2, len(hung_redis.held)  # one check, its one reconnect
    assert elapsed < 2 * 2 + 3, elapsed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cached_check_reuses_a_result_briefly_then_runs_again() -> None:
    clock, calls = Clock(), []
    check = CachedCheck(lambda: calls.append(1) or len(calls), ttl_seconds=1.0, clock=clock)
    assert check.result(timeout=5) == 1
    clock.now += 0.9
    assert check.result(timeout=5) == 1
    clock.now += 0.2
    assert check.result(timeout=5) == 2


def test_cached_check_failure_is_raised_to_every_waiter_and_cached_too() -> None:
    clock, calls = Clock(), []

    def failing() -> None:
        calls.append(1)
        raise ConnectionError("down")

    check = CachedCheck(failing, ttl_seconds=1.0, clock=clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            check.result(timeout=5)
    assert len(calls) == 1


def test_cached_check_hung_check_times_out_callers_and_starts_no_second_run() -> None:
    release, calls = threading.Event(), []

    def hangs() -> str:
        calls.append(1)
        release.wait(10)
        return "ok"

    check = CachedCheck(hangs, ttl_seconds=0.0)
    for _ in range(5):
        with pytest.raises(FutureTimeout):
            check.result(timeout=0.05)
    assert len(calls) == 1
    release.set()
    assert check.result(timeout=5) == "ok"
