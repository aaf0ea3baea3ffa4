"""Backfill: page through the Clerk Backend API's users and mirror each with the webhook rules.

Webhooks only carry what happens after the endpoint is set up; this brings in everyone before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.orm import Session

from gateway.clerk_api import ClerkApi, ClerkApiUnavailable
from gateway.errors import Problem
from gateway.users.service import ClerkUser, UpsertResult, lock_clerk_user, upsert_clerk_user

PAGE_SIZE = 100  # Clerk allows 1..500
# A 429's Retry-After is honoured but bounded: a backfill waits, it never sleeps for an hour.
MAX_WAIT_SECONDS = 30.0
MAX_ATTEMPTS_PER_PAGE = 6


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


def backfill_api(
    api_url: str, secret_key: str, *, sleep: Callable[[float], None] = time.sleep
) -> ClerkApi:
    """The Backend API client with a batch job's patience: long Retry-Afters are shortened to
    MAX_WAIT_SECONDS and waited out, up to MAX_ATTEMPTS_PER_PAGE tries per page."""
    return ClerkApi(
        api_url,
        secret_key,
        max_attempts=MAX_ATTEMPTS_PER_PAGE,
        max_retry_wait_seconds=MAX_WAIT_SECONDS * (MAX_ATTEMPTS_PER_PAGE - 1),
        max_single_wait_seconds=MAX_WAIT_SECONDS,
        retry_transport_errors=True,
        sleep=sleep,
    )


def fetch_user_pages(
    api: ClerkApi, *, page_size: int = PAGE_SIZE, counts: BackfillCounts | None = None
) -> Iterator[list[Any]]:
    """Yield pages of Clerk user objects, oldest first, until a short page."""

    def count_throttle(status: int | None) -> None:
        if status == 429 and counts is not None:
            counts.rate_limited += 1

    offset = 0
    while True:
        try:
            page = api.list_users(page_size, offset, on_retry=count_throttle)
        except ClerkApiUnavailable as exc:
            raise BackfillFailed(_failure(exc, offset)) from None
        yield page  # entries that are not user objects are counted as invalid, not dropped
        if len(page) < page_size:
            return
        offset += len(page)


def _failure(exc: ClerkApiUnavailable, offset: int) -> str:
    where = f"users page at offset {offset}"
    if exc.retryable:
        return f"Gave up on the {where} after {MAX_ATTEMPTS_PER_PAGE} tries: {exc.detail}"
    if exc.upstream_status is not None:
        # 401/403: a wrong CLERK_SECRET_KEY; other 4xx: a wrong CLERK_API_URL.
        return f"Clerk answered HTTP {exc.upstream_status} for the {where}."
    return f"{exc.detail} ({where})"


def backfill_users(
    session: Session,
    pages: Iterator[list[Any]],
    counts: BackfillCounts,
    after_commit: Callable[[UpsertResult], None] | None = None,
) -> BackfillCounts:
    """Upsert every user of every page; one short transaction per user. Idempotent.

    `after_commit` gets each upsert once its row is visible (the CLI enqueues its Stripe job).
    """
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
            if after_commit is not None:
                after_commit(result)
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
