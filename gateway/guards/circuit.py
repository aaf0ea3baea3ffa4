"""A per-service circuit breaker, shared by the threads of one process."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Permit:
    # Only the trial's own result may end the half-open state; calls that were already in flight
    # when the circuit opened report late and must not free the trial slot.
    trial: bool


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `reset_seconds` lets ONE trial through.

    While the trial is in flight every other caller is refused, so a recovering upstream sees one
    request per process, not a thread pool's worth. The trial's result closes or reopens it.
    """

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return CLOSED
            if self._trial_in_flight or self._clock() - self._opened_at >= self._reset_seconds:
                return HALF_OPEN
            return OPEN

    def retry_after(self) -> int:
        """Whole seconds until an open circuit lets a trial through (at least 1)."""
        with self._lock:
            if self._opened_at is None:
                return 1
            remaining = self._reset_seconds - (self._clock() - self._opened_at)
            return max(1, math.ceil(remaining))

    def acquire(self) -> Permit | None:
        """A permit to call now, or None (circuit open). A permit must be recorded exactly once."""
        with self._lock:
            if self._opened_at is None:
                return Permit(trial=False)
            if self._trial_in_flight or self._clock() - self._opened_at < self._reset_seconds:
                return None
            self._trial_in_flight = True
            return Permit(trial=True)

    def record(self, permit: Permit, success: bool) -> None:
        with self._lock:
            if permit.trial:
                self._trial_in_flight = False
            if success:
                self._consecutive_failures = 0
                self._opened_at = None
                return
            self._consecutive_failures += 1
            # A failed trial reopens at once; in the closed state only a run of failures opens it.
            if self._opened_at is not None or self._consecutive_failures >= self._threshold:
                self._opened_at = self._clock()
