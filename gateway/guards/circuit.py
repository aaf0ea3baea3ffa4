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
        self._failing_callers: set[str] = set()
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

    def record(self, permit: Permit, success: bool, caller: str | None = None) -> None:
        """`caller`: whose input the failure may be blamed on (None: the upstream's own fault).

        A guard answering 5xx or timing out on one request may be reacting to that request's
        payload, which its caller controls: in a run of failures each caller counts once, so no
        single caller can open the circuit that every user shares (CONTRACT 4.3). Failures that
        no input can cause (cannot connect) count every time.
        """
        with self._lock:
            if permit.trial:
                self._trial_in_flight = False
            if success:
                self._consecutive_failures = 0
                self._failing_callers.clear()
                self._opened_at = None
                return
            # Once open (it took several callers, or the upstream's own fault), any failure
            # counts: a failed trial reopens whoever sent it.
            if caller is not None and self._opened_at is None:
                if caller in self._failing_callers:
                    return
                self._failing_callers.add(caller)
            self._consecutive_failures += 1
            # A failed trial reopens at once; in the closed state only a run of failures opens it.
            if self._opened_at is not None or self._consecutive_failures >= self._threshold:
                self._opened_at = self._clock()
