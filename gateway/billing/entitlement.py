"""What a user's subscription lets it call: the read behind GUARD_REQUIRES_SUBSCRIPTION and
X-Subscription-Status (CONTRACT 4.3, 4.11)."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from gateway.billing.signatures import stripe_webhook_secrets
from gateway.billing.subscriptions import ENTITLED_STATUSES
from gateway.config import Config
from gateway.errors import Problem
from gateway.models import User
from gateway.webhooks.service import DATABASE_DOWN_ERRORS, DatabaseUnavailable


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


def subscriptions_tracked(config: Config) -> bool:
    """Whether users can have a subscription here: Stripe's webhooks are received (or a guard
    requires one). Without either, the guard route skips the per-call status read."""
    return bool(stripe_webhook_secrets(config) or config.guard_requires_subscription)


def is_entitled(status: str | None) -> bool:
    return status in ENTITLED_STATUSES
