"""The per-process guard machinery (pools, circuits, audit writer), created lazily after fork."""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from gateway.config import Config
from gateway.guards.audit import GuardAuditWriter
from gateway.guards.client import GuardClient
from gateway.guards.registry import GuardRegistry
from gateway.per_process import PerProcess

EXTENSION_KEY = "guards"


@dataclass(frozen=True)
class GuardRuntime:
    client: GuardClient
    audit: GuardAuditWriter


class GuardsExtension:
    """Holds one GuardRuntime per process (gateway.per_process: built after fork, on first use)."""

    def __init__(
        self, app: Flask, config: Config, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._app = app
        self._config = config
        self._clock = clock  # the circuits' clock; tests drive it by hand
        self._runtime = PerProcess(self._build)

    def runtime(self) -> GuardRuntime:
        return self._runtime.get()

    def flush_audit(self, timeout: float = 5.0) -> bool:
        """Write the queued guard_requests rows of this process, if it made any guard call."""
        runtime = self._runtime.built()
        return True if runtime is None else runtime.audit.flush(timeout)

    def _build(self) -> GuardRuntime:
        config = self._config
        client = GuardClient(
            GuardRegistry.from_config(config),
            timeout_seconds=config.guard_timeout_seconds,
            circuit_failures=config.guard_circuit_failures,
            circuit_reset_seconds=config.guard_circuit_reset_seconds,
            pool_size=config.web_threads,
            clock=self._clock,
        )
        audit = GuardAuditWriter(self._app)
        atexit.register(audit.flush, 5.0)
        return GuardRuntime(client, audit)


def init_app(app: Flask, clock: Callable[[], float] = time.monotonic) -> None:
    app.extensions[EXTENSION_KEY] = GuardsExtension(app, app.config["GATEWAY"], clock)


def guard_runtime(app: Flask) -> GuardRuntime:
    extension: GuardsExtension = app.extensions[EXTENSION_KEY]
    return extension.runtime()
