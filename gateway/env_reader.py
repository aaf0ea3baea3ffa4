"""Typed reads of the environment for Config.from_env: every failure names its variable."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

_GUARD_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


# Clerk permission keys: org:<feature>:<permission> (the org: prefix optional, as in has()).
_PERMISSION_RE = re.compile(r"^[A-Za-z0-9_:.-]{1,200}$")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"invalid configuration: {variable}: {problem}")
        self.variable = variable


def require_url(variable: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(variable, "expected an http(s) URL")
    return value


class EnvReader:
    """Typed reads of one mapping; every failure names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {value!r}")

    def integer(
        self, name: str, default: int | None, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {value!r}") from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise ConfigError(name, f"{number} is out of range")
        return number

    def seconds(self, name: str, default: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"expected a number of seconds, got {value!r}") from None
        if not number > 0 or number == float("inf"):
            raise ConfigError(name, "must be a positive number")
        return number

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name) or default
        if value not in choices:
            raise ConfigError(name, f"expected one of {', '.join(choices)}")
        return value

    def url(self, name: str) -> str | None:
        value = self.text(name)
        return require_url(name, value) if value else None

    def csv(self, name: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in (self.text(name) or "").split(",") if item.strip())

    def words(self, name: str) -> tuple[str, ...]:
        return tuple((self.text(name) or "").split())

    def pem(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        # Heroku config vars are often set with literal "\n"; accept both.
        value = value.replace("\\n", "\n")
        if "-----BEGIN PUBLIC KEY-----" not in value:
            raise ConfigError(name, "expected a PEM public key (-----BEGIN PUBLIC KEY-----)")
        return value

    def guard_permissions(self, name: str) -> tuple[tuple[str, str], ...]:
        permissions: dict[str, str] = {}
        for entry in self.csv(name):
            service, sep, permission = entry.partition("=")
            service, permission = service.strip().lower(), permission.strip()
            if not sep or not service or not _PERMISSION_RE.match(permission):
                raise ConfigError(name, f"entry {entry!r} is not guard=org:feature:permission")
            if service in permissions:
                raise ConfigError(name, f"guard {service!r} is listed twice")
            permissions[service] = permission
        return tuple(permissions.items())

    def origins(self, name: str) -> tuple[str, ...]:
        origins = self.csv(name)
        for origin in origins:
            if origin == "*":
                raise ConfigError(name, "'*' is not allowed: list each origin")
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or origin != (f"{parts.scheme}://{parts.netloc}")
            ):
                raise ConfigError(name, f"{origin!r} is not an origin like https://app.example.com")
        return origins

    def guard_services(self, name: str) -> tuple[tuple[str, str], ...]:
        services: dict[str, str] = {}
        for entry in self.csv(name):
            service, sep, url = entry.partition("=")
            service, url = service.strip().lower(), url.strip()
            if not sep or not service or not url:
                raise ConfigError(name, f"entry {entry!r} is not name=url")
            if not _GUARD_NAME_RE.match(service):
                raise ConfigError(name, f"service name {service!r} must be [a-z0-9_-]")
            if service in services:
                raise ConfigError(name, f"service {service!r} is listed twice")
            services[service] = require_url(name, url)
        return tuple(services.items())
