"""A small client of Clerk's Backend API: short timeouts, 429 Retry-After honoured (bounded)."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from gateway.config import Config
from gateway.errors import Problem

log = logging.getLogger(__name__)


class ClerkApiUnavailable(Problem):
    status, code, title = 503, "clerk_api_unavailable", "Clerk unavailable"
    default_detail = (
        "Clerk's Backend API could not be reached or refused the request; retry shortly."
    )


class ClerkApi:
    """Thread-safe (one urllib3 pool per process). Methods return parsed JSON or raise a Problem."""

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        timeout: urllib3.Timeout | None = None,
        max_attempts: int = 3,
        max_retry_wait_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {secret_key}",
            "Accept": "application/json",
            "User-Agent": "clerk-gateway",
        }
        self._timeout = timeout or urllib3.Timeout(connect=3.0, read=10.0)
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait_seconds
        self._sleep = sleep
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=10, retries=False)

    @classmethod
    def from_config(cls, config: Config) -> ClerkApi | None:
        if not config.clerk_secret_key:
            return None
        return cls(config.clerk_api_url, config.clerk_secret_key)

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The Clerk user object, or None when Clerk does not know the id."""
        # quote(safe=""): the id comes from a token; it must stay one path segment.
        return self.get_json(f"/users/{quote(user_id, safe='')}", allow_404=True)

    def get_jwks(self) -> dict[str, Any]:
        document = self.get_json("/jwks")
        assert document is not None
        return document

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, allow_404: bool = False
    ) -> Any:
        url = self.base_url + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        waited = 0.0
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = self._pool.request(
                    "GET", url, headers=self._headers, timeout=self._timeout, redirect=False
                )
            except urllib3.exceptions.HTTPError as exc:
                log.warning("Clerk API %s failed: %s", path.split("/")[1], type(exc).__name__)
                raise ClerkApiUnavailable() from None
            if response.status == 200:
                try:
                    return json.loads(response.data)
                except ValueError:
                    raise ClerkApiUnavailable("Clerk's Backend API answered non-JSON.") from None
            if response.status == 404 and allow_404:
                return None
            if response.status in (429, 502, 503, 504) and attempt < self._max_attempts:
                delay = retry_after_seconds(response.headers.get("Retry-After"), default=0.5)
                if waited + delay <= self._max_retry_wait:
                    self._sleep(delay)
                    waited += delay
                    continue
            log.warning("Clerk API %s answered %s", path.split("/")[1], response.status)
            headers = {}
            if response.status == 429 and response.headers.get("Retry-After"):
                headers["Retry-After"] = response.headers["Retry-After"]
            raise ClerkApiUnavailable(
                f"Clerk's Backend API answered {response.status}; retry shortly.", headers=headers
            )
        raise ClerkApiUnavailable()


def retry_after_seconds(value: str | None, default: float) -> float:
    """Retry-After as delta-seconds or an HTTP date; a malformed value gets the default."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())
