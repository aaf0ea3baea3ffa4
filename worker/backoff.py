"""The one retry delay of every task: exponential backoff with jitter."""

from __future__ import annotations

import random


def backoff_seconds(retries: int, cap: float, base: float = 2.0) -> float:
    """A delay in [ceiling / 2, ceiling], ceiling = min(cap, base * 2**retries).

    The first retry comes after 1-2 s; the jitter spreads retries of many tasks that failed
    together (a broker or database outage) instead of sending them back at the same moment.
    """
    ceiling = min(cap, base * 2**retries)
    return random.uniform(ceiling / 2, ceiling)
