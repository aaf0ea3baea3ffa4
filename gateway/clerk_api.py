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


# Answers worth another try: rate limited, or Clerk's side failing for a moment.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ClerkApiUnavailable(Problem):
    status, code, title = 503, "clerk_api_unavailable", "Clerk unavailable"
    default_detail = (
        "Clerk's Backend API could not be reached or refused the request; retry shortly."
    )

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        upstream_status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(detail, headers=headers)
        # For batch callers (backfill) that word their own failure: Clerk's status, and whether
        # the retry budget ran out (429/5xx) rather than Clerk refusing outright (401, 400...).
        self.upstream_status = upstream_status
        self.retryable = retryable


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
        max_single_wait_seconds: float | None = None,
        retry_transport_errors: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """The retry policy: 429 and 5xx (RETRY_STATUSES) are retried up to `max_attempts` tries,
        waiting Retry-After (else 0.5 s) each time, at most `max_retry_wait_seconds` in all.

        `max_single_wait_seconds` unset (a request is waiting): a Retry-After beyond the budget
        gives up at once and passes Retry-After on. Set (a batch job): a longer Retry-After is
        shortened to it, so a backfill keeps going instead of sleeping for an hour.
        `retry_transport_errors`: no answer at all is retried too (a batch job; a login would
        rather answer 503 than spend several connect timeouts).
        """
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {secret_key}",
            "Accept": "application/json",
            "User-Agent": "clerk-gateway",
        }
        self._timeout = timeout or urllib3.Timeout(connect=3.0, read=10.0)
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait_seconds
        self._max_single_wait = max_single_wait_seconds
        self._retry_transport_errors = retry_transport_errors
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

    def list_users(
        self, limit: int, offset: int, *, on_retry: Callable[[int | None], None] | None = None
    ) -> list[Any]:
        """One page of GET /users, oldest first (so sign-ups during a backfill land on later
        pages instead of shifting the offsets of pages not yet read)."""
        params = {"limit": limit, "offset": offset, "order_by": "created_at"}
        body = self.get_json("/users", params, on_retry=on_retry)
        # GET /v1/users answers a bare array; accept the paginated {"data": [...]} shape too.
        users = body.get("data") if isinstance(body, dict) else body
        if not isinstance(users, list):
            raise ClerkApiUnavailable("Clerk's Backend API answered an unexpected shape.")
        return users

    def get_json(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        allow_404: bool = False,
        on_retry: Callable[[int | None], None] | None = None,
    ) -> Any:
        """Parsed JSON of a GET; `on_retry(status)` is told of each failure that is waited out
        (status None: no answer at all)."""
        url = self.base_url + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        waited = 0.0
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = self._pool.request(
                    "GET", url, headers=self._headers, timeout=self._timeout, redirect=False
                )
            except urllib3.exceptions.HTTPError as exc:
                if self._retry_transport_errors and attempt < self._max_attempts:
                    slept = self._wait(None, None, waited, on_retry)
                    if slept is not None:
                        waited += slept
                        continue
                log.warning("Clerk API %s failed: %s", path.split("/")[1], type(exc).__name__)
                raise ClerkApiUnavailable(retryable=True) from None
            if response.status == 200:
                try:
                    return json.loads(response.data)
                except ValueError:
                    raise ClerkApiUnavailable("Clerk's Backend API answered non-JSON.") from None
            if response.status == 404 and allow_404:
                return None
            retryable = response.status in RETRY_STATUSES
            if retryable and attempt < self._max_attempts:
                retry_after = response.headers.get("Retry-After")
                slept = self._wait(response.status, retry_after, waited, on_retry)
                if slept is not None:
                    waited += slept
                    continue
            log.warning("Clerk API %s answered %s", path.split("/")[1], response.status)
            headers = {}
            if response.status == 429 and response.headers.get("Retry-After"):
                headers["Retry-After"] = response.headers["Retry-After"]
            raise ClerkApiUnavailable(
                f"Clerk's Backend API answered HTTP {response.status}; retry shortly.",
                headers=headers,
                upstream_status=response.status,
                retryable=retryable,
            )
        raise ClerkApiUnavailable()

    def _wait(
        self,
        status: int | None,
        retry_after: str | None,
        waited: float,
        on_retry: Callable[[int | None], None] | None,
    ) -> float | None:
        """Sleep before the next try if the budget allows and return how long; None if not."""
        delay = retry_after_seconds(retry_after, default=0.5)
        if self._max_single_wait is not None:
            delay = min(delay, self._max_single_wait)
        if waited + delay > self._max_retry_wait:
            return None
        if on_retry is not None:
            on_retry(status)
        self._sleep(delay)
        return delay


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
