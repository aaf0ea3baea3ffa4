"""What a user's subscription lets it call: the read behind GUARD_REQUIRES_SUBSCRIPTION and
X-Subscription-Status (CONTRACT 4.3, 4.11)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Flask
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from gateway.billing.signatures import stripe_webhook_secrets
from gateway.billing.subscriptions import ENTITLED_STATUSES
from gateway.config import Config
from gateway.errors import Problem
from gateway.extensions import DATABASE_DOWN_ERRORS, db
from gateway.models import User
from gateway.webhooks.service import DatabaseUnavailable


class SubscriptionRequired(Problem):
    status, code, title = 402, "subscription_required", "Subscription required"
    default_detail = "This service needs an active or trialing subscription."


_STATUS_OF = select(User.subscription_status).where(
    User.clerk_user_id == bindparam("clerk_user_id")
)


def subscription_status_of(engine: Engine, clerk_user_id: str | None) -> str | None:
    """The user's subscription status (None without a user or a subscription).

    Its own short connection, given back before the guard call: holding a pooled connection
    (and a transaction) across an upstream call of up to GUARD_TIMEOUT_SECONDS would starve the
    pool. Autocommit: one statement needs no BEGIN and no ROLLBACK round trips
    (bench/subscription_read_cost.py). Raises DatabaseUnavailable.
    """
    if not clerk_user_id:
        return None
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(_STATUS_OF, {"clerk_user_id": clerk_user_id}).scalar()
    except DATABASE_DOWN_ERRORS as exc:
        raise DatabaseUnavailable("The subscription could not be read; retry later.") from exc


CACHE_KEY = "subscription_status_cache"


class StatusCache:
    """Statuses read in the last `ttl_seconds`, per process, shared by its threads.

    A client calls guards in bursts; without this, each call pays a database round trip (about
    1 ms p50 in process, half a guard call: bench/subscription_read_cost.py). The price is that
    the gate follows a change applied by the worker within `ttl_seconds` rather than at once,
    far less than Stripe's own delivery delay. Bounded: when full it is emptied, not evicted
    entry by entry (every entry is at most a second old anyway).
    """

    TTL_SECONDS = 1.0

    def __init__(
        self,
        ttl_seconds: float = TTL_SECONDS,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def status_of(self, clerk_user_id: str | None, read: Callable[[str], str | None]) -> str | None:
        """The cached status, else `read(clerk_user_id)` (which may raise), remembered."""
        if not clerk_user_id:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(clerk_user_id)
        if entry is not None and now - entry[0] < self.ttl_seconds:
            return entry[1]
        status = read(clerk_user_id)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[clerk_user_id] = (now, status)
        return status


def current_subscription_status(app: Flask, clerk_user_id: str | None) -> str | None:
    """The user's status through this process's StatusCache. Raises DatabaseUnavailable."""
    cache: StatusCache = app.extensions.setdefault(CACHE_KEY, StatusCache())
    return cache.status_of(
        clerk_user_id, lambda user_id: subscription_status_of(db.engine, user_id)
    )


def subscriptions_tracked(config: Config) -> bool:
    """Whether users can have a subscription here: Stripe's webhooks are received (or a guard
    requires one). Without either, the guard route skips the per-call status read."""
    return bool(stripe_webhook_secrets(config) or config.guard_requires_subscription)


def is_entitled(status: str | None) -> bool:
    return status in ENTITLED_STATUSES
