"""A user's Stripe customer: find or create it, push changes, mark deletion, link by hand.

The jobs of worker/billing.py call these; each takes a session and a client and commits once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.billing.client import LIST_PAGE_SIZE, translated
from gateway.billing.problems import (
    StripeCustomerAlreadyLinked,
    StripeUnavailable,
)
from gateway.models import User
from gateway.models.base import isoformat, utcnow
from gateway.users.service import advisory_xact_lock

# Stripe keeps an idempotency key for at least 24 hours. Within that window a retried create with
# the same key replays the first answer (the same customer); after it, the key is forgotten and a
# create would make a second customer, so an older user is looked up first. Margin: one hour.
IDEMPOTENCY_WINDOW = timedelta(hours=23)


@dataclass(frozen=True)
class Outcome:
    """What a Stripe job did; `status` is one word, for logs and task results."""

    status: str
    customer_id: str | None = None


def idempotency_key(clerk_user_id: str, customer_deleted_at: datetime | None = None) -> str:
    """Derived from the Clerk id, so every job, retry and duplicate delivery sends the same key.

    A user whose customer was deleted in Stripe gets a key of its own for the replacement:
    within the 24-hour window the first key would only replay the deleted customer.
    """
    if customer_deleted_at is not None:
        return f"clerk-user-{clerk_user_id}-customer-after-{int(customer_deleted_at.timestamp())}"
    return f"clerk-user-{clerk_user_id}-customer-v1"


def ensure_stripe_customer(
    session: Session, client: stripe.StripeClient, user_id: int, *, now: datetime | None = None
) -> Outcome:
    """Give an active user its one Stripe customer: reuse one that exists, else create it.

    Commits. Raises StripeUnavailable (retry) or StripeRequestFailed / StripeCustomerAlreadyLinked
    (do not retry).
    """
    with stripe_transaction(session):
        user = _locked_user(session, user_id)
        if user is None:
            return Outcome("user_not_found")
        if user.deactivated:
            return Outcome("skipped_inactive")
        if user.stripe_customer_id:
            return Outcome("already_linked", user.stripe_customer_id)
        if not user.clerk_user_id:
            # The idempotency key and the lookup both hang on the Clerk id.
            return Outcome("skipped_no_clerk_id")

        customer_id = None
        if _created_before(user, (now or utcnow()) - IDEMPOTENCY_WINDOW):
            customer_id = find_customer_id(client, user.clerk_user_id)
        status = "found"
        if customer_id is None:
            customer_id, status = _create_customer(client, user)
        outcome = _link(session, user, customer_id, status)
        if outcome.status == "found":
            # A customer made by an earlier attempt may carry the email and name of back then.
            _push(client, user, customer_id)
        return outcome


def push_customer_changes(session: Session, client: stripe.StripeClient, user_id: int) -> Outcome:
    """Send the user's current email and name to its customer (the latest row wins, not the event).

    A user that has no customer yet gets one instead, created from the same current values.
    """
    with stripe_transaction(session):
        user = _locked_user(session, user_id)
        if user is None:
            return Outcome("user_not_found")
        if user.deactivated:
            return Outcome("skipped_inactive", user.stripe_customer_id)
        customer_id = user.stripe_customer_id
        if customer_id and user.clerk_user_id:
            _push(client, user, customer_id)
            return Outcome("updated", customer_id)
    if customer_id is None:
        return ensure_stripe_customer(session, client, user_id)
    return Outcome("skipped_no_clerk_id", customer_id)


def mark_customer_deleted(session: Session, client: stripe.StripeClient, user_id: int) -> Outcome:
    """Keep a deleted user's customer (deleting one cancels its subscriptions); mark it instead."""
    with stripe_transaction(session):
        user = _locked_user(session, user_id)
        if user is None:
            return Outcome("user_not_found")
        if user.deleted_at is None:
            return Outcome("skipped_active", user.stripe_customer_id)
        if not user.stripe_customer_id:
            return Outcome("not_linked")
        with translated():
            client.v1.customers.update(
                user.stripe_customer_id,
                params={"metadata": {"clerk_deleted_at": isoformat(user.deleted_at) or ""}},
            )
        return Outcome("marked", user.stripe_customer_id)


def find_customer_id(client: stripe.StripeClient, clerk_user_id: str) -> str | None:
    """The oldest live customer whose metadata.clerk_user_id is this user, if any.

    Search is eventually consistent (seconds, up to an hour in an outage): a customer created
    moments ago may not show. That is why it is only used where the idempotency key cannot help
    (past its 24-hour window, or when the key was first used with other parameters), never as the
    guard against duplicates right after a create.
    """
    matches = [c for c in _customers_of(client, clerk_user_id)]
    if not matches:
        return None
    return str(min(matches, key=lambda c: (c.get("created") or 0, c["id"]))["id"])


def full_name(user: User) -> str | None:
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return name or None


def _create_customer(client: stripe.StripeClient, user: User) -> tuple[str, str]:
    assert user.clerk_user_id is not None
    params: dict[str, Any] = {"metadata": {"clerk_user_id": user.clerk_user_id}}
    if user.email:
        params["email"] = user.email
    name = full_name(user)
    if name:
        params["name"] = name
    try:
        with translated(passthrough=(stripe.IdempotencyError,)):
            customer = client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={
                    "idempotency_key": idempotency_key(
                        user.clerk_user_id, user.stripe_customer_deleted_at
                    )
                },
            )
    except stripe.IdempotencyError as exc:
        if exc.http_status != 400:
            raise StripeUnavailable() from None
        # The key was first used with other parameters (the email or name changed between two
        # attempts): that first request did create the customer. Find it rather than make another.
        found = find_customer_id(client, user.clerk_user_id)
        if found is None:
            raise StripeUnavailable(
                "The customer created under this user's key is not searchable yet; retry later."
            ) from None
        return found, "found"
    return str(customer.id), "created"


def _push(client: stripe.StripeClient, user: User, customer_id: str) -> None:
    with translated():
        client.v1.customers.update(
            customer_id,
            params={
                # "" clears a field on Stripe, as the user cleared it on Clerk.
                "email": user.email or "",
                "name": full_name(user) or "",
                "metadata": {"clerk_user_id": user.clerk_user_id or ""},
            },
        )


def _link(session: Session, user: User, customer_id: str, status: str) -> Outcome:
    """Store the id only if no other job got there first: one link per user, ever."""
    try:
        result = session.execute(
            update(User)
            .where(User.id == user.id, User.stripe_customer_id.is_(None))
            .values(stripe_customer_id=customer_id, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    except IntegrityError:
        # The unique column: this customer already belongs to another user.
        raise StripeCustomerAlreadyLinked() from None
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.refresh(user)
        return Outcome("already_linked", user.stripe_customer_id)
    return Outcome(status, customer_id)


def _customers_of(client: stripe.StripeClient, clerk_user_id: str) -> Iterator[dict[str, Any]]:
    quoted = clerk_user_id.replace("\\", "\\\\").replace("'", "\\'")
    try:
        with translated(passthrough=(stripe.InvalidRequestError,)):
            found = client.v1.customers.search(
                params={"query": f"metadata['clerk_user_id']:'{quoted}'", "limit": 10}
            )
        for obj in found.data:
            yield obj.to_dict()
        return
    except stripe.InvalidRequestError:
        # Search is not offered everywhere (accounts in India, Stripe-compatible test servers):
        # list every customer instead. Slow on big accounts, but this path is rare.
        pass
    with translated():
        for obj in client.v1.customers.list(params={"limit": LIST_PAGE_SIZE}).auto_paging_iter():
            customer = obj.to_dict()
            if (customer.get("metadata") or {}).get("clerk_user_id") == clerk_user_id:
                yield customer


def _created_before(user: User, moment: datetime) -> bool:
    created = user.created_at
    if created is None:
        return True
    return created < moment


def lock_stripe_link(session: Session, user_id: int) -> None:
    """Serialise Stripe jobs of one user until the transaction ends.

    Ten duplicate jobs must not make ten create calls (test servers ignore idempotency keys, and
    real Stripe answers a concurrent same-key request with 409). Its own lock space, not
    lock_clerk_user's, so webhook events never wait on a Stripe call.
    """
    advisory_xact_lock(session, f"stripe-customer:{user_id}")


def _locked_user(session: Session, user_id: int) -> User | None:
    """The user, read after taking its Stripe lock: what an earlier job left is what we see."""
    lock_stripe_link(session, user_id)
    return session.get(User, user_id)


@contextmanager
def stripe_transaction(session: Session) -> Iterator[None]:
    """Commit on success, roll back on any error (which also releases the per-user lock)."""
    try:
        yield
    except BaseException:
        session.rollback()
        raise
    session.commit()
