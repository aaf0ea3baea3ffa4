"""The configured guard services, by name: the only way a request can choose an upstream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.config import Config
from gateway.guards.problems import GuardUnknown


@dataclass(frozen=True)
class GuardService:
    name: str
    # Never shown to clients (GET /api/v1/guards lists names only): URLs reveal internal hosts.
    url: str
    # GUARD_PERMISSIONS: the organization permission a session needs to call it (None: any).
    permission: str | None = None


class GuardRegistry:
    """Name -> service, fixed at start from GUARD_SERVICES (already validated by Config).

    Clients send a name, never a URL, so a request cannot make the gateway call an arbitrary host.
    """

    def __init__(
        self,
        services: tuple[tuple[str, str], ...],
        permissions: tuple[tuple[str, str], ...] = (),
    ) -> None:
        required = dict(permissions)
        self._services = {
            name: GuardService(name, url, required.get(name)) for name, url in services
        }

    @classmethod
    def from_config(cls, config: Config) -> GuardRegistry:
        return cls(config.guard_services, config.guard_permissions)

    def get(self, name: str) -> GuardService:
        service = self._services.get(name)
        if service is None:
            raise GuardUnknown()
        return service

    def __iter__(self) -> Iterator[GuardService]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)
