"""The one pattern for per-process singletons (pools, caches, circuit state, writer threads).

Created in create_app as an unbuilt holder (nothing runs at import, nothing is built before fork);
the object itself is built on first use in each process and rebuilt when the pid changes. With
gunicorn's --preload the app is created in the master: sockets, locks and threads must not cross
fork, while every thread of one process must share them (one pool, one cache, one circuit).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._value: T | None = None

    def get(self) -> T:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._value = self._build()
                    self._pid = pid  # after the value: another thread never sees a stale one
        return self._value  # type: ignore[return-value]  # built for this pid (may be None)

    def built(self) -> T | None:
        """This process's object if it was built here, else None (nothing is built by asking)."""
        return self._value if self._pid == os.getpid() else None
