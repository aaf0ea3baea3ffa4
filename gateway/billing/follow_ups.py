"""What follows a user change on the Stripe side: the one rule, for login, the worker and backfill.

A change calls for at most one job (a task name and the user id, its argument), and only when
STRIPE_API_KEY is set; it is enqueued after the commit that makes the row visible to workers.
A follow-up that was never sent (the broker was down, or a first login was refused by BiasGuard
after its user row was created) is not lost: the periodic sweep enqueues ensure_stripe_customer
for every active user still without a customer (sweep_users_without_customer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, MARK_CUSTOMER_DELETED, PUSH_CUSTOMER_CHANGES
from gateway.models import User
from gateway.models.base import utcnow
from gateway.users.service import UpsertResult

log = logging.getLogger(__name__)

FollowUp = tuple[str, int]  # (task name, user id)

# Fields a Stripe customer carries: a change to one of them is pushed to Stripe.
STRIPE_FIELDS = frozenset({"email", "first_name", "last_name"})
# The direct path (login, the webhook worker, backfill) gets this long before the sweep steps in.
SWEEP_GRACE = timedelta(minutes=2)
# A user the sweep asked for is asked for again after this long (Stripe may refuse for a while).
SWEEP_INTERVAL = timedelta(minutes=15)
SWEEP_BATCH = 100


def stripe_follow_ups(
    result: UpsertResult, config: Config, deleted: bool = False
) -> tuple[FollowUp, ...]:
    """The Stripe job a user change calls for: a new active user gets a customer, a change of
    email or name is pushed, a deletion marks the customer. None without STRIPE_API_KEY."""
    if not config.stripe_api_key or result.skipped is not None:
        return ()
    user = result.user
    if deleted:
        # A tombstone for an unknown user has no customer to mark.
        return () if result.created else ((MARK_CUSTOMER_DELETED, user.id),)
    if not user.is_active:
        return ()
    if result.created or result.linked:
        return ((ENSURE_STRIPE_CUSTOMER, user.id),)
    if result.changed & STRIPE_FIELDS:
        # Pushes the new email/name; creates the customer when the user has none yet.
        return ((PUSH_CUSTOMER_CHANGES, user.id),)
    return ()


def send_follow_ups(enqueue: Callable[[str, int], bool], follow_ups: Iterable[FollowUp]) -> bool:
    """Enqueue each job; False when the broker refused one (the sweep covers what is missing)."""
    sent = True
    for task, user_id in follow_ups:
        sent = enqueue(task, user_id) and sent
    return sent


def sweep_users_without_customer(
    session: Session,
    enqueue: Callable[[str, int], bool],
    config: Config,
    now: datetime | None = None,
) -> int:
    """Enqueue ensure_stripe_customer for active users still without a customer; how many.

    A user whose customer was deleted in Stripe is left to the operator (`flask stripe reconcile`
    lists it): a new customer is never created behind their back. Each user is asked for at most
    once per SWEEP_INTERVAL; the job itself is idempotent (find-or-create by Clerk user id).
    """
    if not config.stripe_api_key:
        return 0
    now = now or utcnow()
    user_ids = session.scalars(
        select(User.id)
        .where(
            User.stripe_customer_id.is_(None),
            User.stripe_customer_deleted_at.is_(None),
            User.clerk_user_id.is_not(None),
            User.is_active.is_(True),
            User.deleted_at.is_(None),
            User.created_at < now - SWEEP_GRACE,
            or_(
                User.stripe_follow_up_at.is_(None),
                User.stripe_follow_up_at < now - SWEEP_INTERVAL,
            ),
        )
        .order_by(User.id)
        .limit(SWEEP_BATCH)
    ).all()
    session.rollback()
    sent = [user_id for user_id in user_ids if enqueue(ENSURE_STRIPE_CUSTOMER, user_id)]
    if sent:
        session.execute(
            update(User)
            .where(User.id.in_(sent))
            # updated_at kept: this is bookkeeping, not a change to the user.
            .values(stripe_follow_up_at=now, updated_at=User.updated_at)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        log.info("stripe sweep: %d users without a customer, job enqueued", len(sent))
    return len(sent)
