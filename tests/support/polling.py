"""Wait for an outcome with a deadline instead of sleeping: the one polling loop of the suite.

Deadlines are generous on purpose (the suite runs on a busy 2-core machine); a passing check
returns at once, so a generous deadline costs nothing when things work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    describe: Callable[[], str] | str | None = None,
) -> T:
    """Call `check` until it returns something truthy, and return that; TimeoutError otherwise.

    `describe` says what was awaited (or returns the evidence, e.g. a process log) on failure.
    """
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            what = describe() if callable(describe) else describe
            raise TimeoutError(
                f"condition not met within {timeout}s (last: {last!r})"
                + (f": {what}" if what else "")
            )
        time.sleep(interval)
        last = check()
    return last


# What a busy 2-core machine may add to an operation's own time bound (a configured timeout, or
# "at once" for an acknowledgement). An outage bound is asserted as bound + LOAD_SLACK_SECONDS:
# still far below a hang (a TCP connect or read left to the kernel's minutes-long defaults), never
# failed by a scheduler that parked the test process for a few seconds.
LOAD_SLACK_SECONDS = 8.0
