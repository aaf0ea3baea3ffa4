"""One guard runtime per process: shared by threads, rebuilt (never inherited) after fork."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from gateway.guards.runtime import guard_runtime


def test_guard_runtime_threads_of_one_process_share_one_runtime(guard_app: Flask) -> None:
    with ThreadPoolExecutor(8) as pool:
        runtimes = list(pool.map(lambda _: guard_runtime(guard_app), range(64)))

    assert len({id(runtime) for runtime in runtimes}) == 1


def test_guard_runtime_after_fork_child_builds_its_own(guard_app: Flask) -> None:
    parent_runtime = guard_runtime(guard_app)
    parent_breaker = parent_runtime.client.breakers["echo"]
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child: answer over the pipe, then leave without running pytest's teardown
        try:
            child_runtime = guard_runtime(guard_app)
            fresh = child_runtime is not parent_runtime
            own_breaker = child_runtime.client.breakers["echo"] is not parent_breaker
            os.write(write_end, b"ok" if fresh and own_breaker else b"shared")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)

    assert answer == b"ok"
    assert guard_runtime(guard_app) is parent_runtime
