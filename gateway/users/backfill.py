"""Backfill: page through the Clerk Backend API's users and mirror each with the webhook rules.

Webhooks only carry what happens after the endpoint is set up; this brings in everyone before.
The HTTP code is local on purpose (a few lines of `requests`), so it does not depend on the login
feature's Backend API client.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import requests
from sqlalchemy.orm import Session

from gateway.errors import Problem
from gateway.users.service import ClerkUser, lock_clerk_user, upsert_clerk_user

PAGE_SIZE = 100  # Clerk allows 1..500
# A 429's Retry-After is honoured but bounded: a backfill waits, it never sleeps for an hour.
MAX_WAIT_SECONDS = 30.0
MAX_ATTEMPTS_PER_PAGE = 6
HTTP_TIMEOUT = (5.0, 30.0)


class BackfillFailed(Problem):
    status, code, title = 502, "clerk_backfill_failed", "Clerk backfill failed"
    default_detail = "The Clerk Backend API did not return the users; nothing further was read."


@dataclass
class BackfillCounts:
    pages: int = 0
    seen: int = 0
    created: int = 0
    linked: int = 0  # an existing local user (no Clerk id yet) matched by verified email
    updated: int = 0
    unchanged: int = 0  # ours is as new or newer (an earlier run, or a webhook got there first)
    deleted: int = 0  # deleted here: never brought back
    no_email: int = 0
    invalid: int = 0
    rate_limited: int = 0  # 429 answers waited out

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def fetch_user_pages(
    api_url: str,
    secret_key: str,
    *,
    page_size: int = PAGE_SIZE,
    counts: BackfillCounts | None = None,
    http: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[Any]]:
    """Yield pages of Clerk user objects, oldest first, until a short page.

    Ordered by created_at ascending so users who sign up during the backfill land on later pages
    instead of shifting the offsets of pages not yet read.
    """
    http = http or requests.Session()
    url = f"{api_url.rstrip('/')}/users"
    headers = {"Authorization": f"Bearer {secret_key}", "Accept": "application/json"}
    offset = 0
    while True:
        params = {"limit": page_size, "offset": offset, "order_by": "created_at"}
        page = _get_page(http, url, headers, params, counts, sleep)
        yield page
        if len(page) < page_size:
            return
        offset += len(page)


def backfill_users(
    session: Session, pages: Iterator[list[Any]], counts: BackfillCounts
) -> BackfillCounts:
    """Upsert every user of every page; one short transaction per user. Idempotent."""
    for page in pages:
        counts.pages += 1
        for payload in page:
            counts.seen += 1
            try:
                clerk = ClerkUser.from_payload(payload)
            except ValueError:
                counts.invalid += 1
                continue
            if not clerk.primary_email:
                counts.no_email += 1
                continue
            # The same per-user lock as the webhook worker: a live event for this user and the
            # backfill never interleave, and the newer data wins either way.
            lock_clerk_user(session, clerk.id)
            result = upsert_clerk_user(session, clerk)
            session.commit()
            if result.skipped == "stale":
                counts.unchanged += 1
            elif result.skipped == "deleted":
                counts.deleted += 1
            elif result.created:
                counts.created += 1
            elif result.linked:
                counts.linked += 1
            elif result.changed:
                counts.updated += 1
            else:
                counts.unchanged += 1
    return counts


def _get_page(
    http: requests.Session,
    url: str,
    headers: dict[str, str],
    params: dict[str, Any],
    counts: BackfillCounts | None,
    sleep: Callable[[float], None],
) -> list[Any]:
    where = f"users page at offset {params['offset']}"
    last = "no answer"
    for attempt in range(MAX_ATTEMPTS_PER_PAGE):
        wait: float | None = None
        try:
            response = http.get(url, params=params, headers=headers, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            last = type(exc).__name__
        else:
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                if response.status_code == 429 and counts is not None:
                    counts.rate_limited += 1
                wait = _retry_after(response.headers.get("Retry-After"))
            elif response.status_code != 200:
                # 401/403: a wrong CLERK_SECRET_KEY; other 4xx: a wrong CLERK_API_URL.
                raise BackfillFailed(f"Clerk answered HTTP {response.status_code} for the {where}.")
            else:
                return _users_of(response, where)
        if attempt + 1 < MAX_ATTEMPTS_PER_PAGE:
            sleep(min(MAX_WAIT_SECONDS, wait if wait is not None else _backoff(attempt)))
    raise BackfillFailed(f"Gave up on the {where} after {MAX_ATTEMPTS_PER_PAGE} tries ({last}).")


def _users_of(response: requests.Response, where: str) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        raise BackfillFailed(f"Clerk answered non-JSON for the {where}.") from None
    # GET /v1/users answers a bare array; accept the paginated {"data": [...]} shape too.
    users = body.get("data") if isinstance(body, dict) else body
    if not isinstance(users, list):
        raise BackfillFailed(f"Clerk answered an unexpected shape for the {where}.")
    return users  # entries that are not user objects are counted as invalid, not dropped


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _backoff(attempt: int) -> float:
    return random.uniform(0.5, 1.0) * min(MAX_WAIT_SECONDS, 2.0**attempt)
