"""Stripe customers for local users: create once, push changes, mark deletions, reconcile."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.errors import Problem
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, MARK_CUSTOMER_DELETED, PUSH_CUSTOMER_CHANGES
from gateway.models import User
from gateway.models.base import isoformat, utcnow
from gateway.users.service import advisory_xact_lock

# Stripe keeps an idempotency key for at least 24 hours. Within that window a retried create with
# the same key replays the first answer (the same customer); after it, the key is forgotten and a
# create would make a second customer, so an older user is looked up first. Margin: one hour.
IDEMPOTENCY_WINDOW = timedelta(hours=23)
# stripe-python's own retries (connection errors, 409, 5xx; same idempotency key each time). The
# task adds slower retries with backoff on top for outages longer than a few seconds.
MAX_NETWORK_RETRIES = 2
# (connect, read) seconds: a job holds its per-user lock while it waits on Stripe.
HTTP_TIMEOUT = (5.0, 20.0)
LIST_PAGE_SIZE = 100


class StripeUnavailable(Problem):
    """Transient: rate limited, unreachable, or a 5xx. Retrying with the same key is safe."""

    status, code, title = 503, "stripe_unavailable", "Stripe unavailable"
    default_detail = "Stripe could not be reached or asked us to slow down; retry later."


class StripeRequestFailed(Problem):
    """Permanent: Stripe refused the request (invalid request, card, authentication)."""

    status, code, title = 502, "stripe_request_failed", "Stripe refused the request"
    default_detail = "Stripe refused the request; retrying will not help."


class StripeCustomerAlreadyLinked(Problem):
    status, code, title = 409, "stripe_customer_already_linked", "Customer already linked"
    default_detail = "That Stripe customer is already linked to another user."


class StripeUserAlreadyLinked(Problem):
    status, code, title = 409, "stripe_user_already_linked", "User already linked"
    default_detail = "The user is already linked to another Stripe customer."


class StripeCustomerNotFound(Problem):
    status, code, title = 404, "stripe_customer_not_found", "Stripe customer not found"
    default_detail = "Stripe has no such customer (or it was deleted)."


class StripeDisabled(Problem):
    status, code, title = 503, "stripe_disabled", "Stripe is not configured"
    default_detail = "STRIPE_API_KEY is not set, so Stripe linking is off."


@dataclass(frozen=True)
class Outcome:
    """What a Stripe job did; `status` is one word, for logs and task results."""

    status: str
    customer_id: str | None = None


def make_client(api_key: str, api_base: str | None = None) -> stripe.StripeClient:
    """A client per call site: never stripe.api_key, which is global to the process."""
    # stripe-python logs every request at INFO, and Stripe's error messages (which may echo the
    # parameters sent, an email among them); we log outcomes ourselves.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=HTTP_TIMEOUT),
    )


def client_from_config(config: Config) -> stripe.StripeClient | None:
    """None when STRIPE_API_KEY is unset: Stripe linking is off."""
    if not config.stripe_api_key:
        return None
    return make_client(config.stripe_api_key, config.stripe_api_base)


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
    with _transaction(session):
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
    with _transaction(session):
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
    with _transaction(session):
        user = _locked_user(session, user_id)
        if user is None:
            return Outcome("user_not_found")
        if user.deleted_at is None:
            return Outcome("skipped_active", user.stripe_customer_id)
        if not user.stripe_customer_id:
            return Outcome("not_linked")
        with _translated():
            client.v1.customers.update(
                user.stripe_customer_id,
                params={"metadata": {"clerk_deleted_at": isoformat(user.deleted_at) or ""}},
            )
        return Outcome("marked", user.stripe_customer_id)


def link_user_to_stripe_customer(
    session: Session,
    client: stripe.StripeClient,
    user: User,
    customer_id: str,
    *,
    replace: bool = False,
) -> Outcome:
    """Operators: link an existing customer to a user, e.g. one made before the gateway existed.

    Refuses a customer linked to another user (here, or by its metadata.clerk_user_id), and a user
    linked to another customer unless `replace`. Commits.
    """
    with _transaction(session):
        _lock_stripe_link(session, user.id)
        session.refresh(user)
        other = session.scalar(
            select(User.id).where(User.stripe_customer_id == customer_id, User.id != user.id)
        )
        if other is not None:
            raise StripeCustomerAlreadyLinked()
        if user.stripe_customer_id == customer_id:
            return Outcome("already_linked", customer_id)
        if user.stripe_customer_id and not replace:
            raise StripeUserAlreadyLinked(
                f"The user is linked to {user.stripe_customer_id}; pass --replace to change it."
            )
        customer = _retrieve_customer(client, customer_id)
        owner = (customer.get("metadata") or {}).get("clerk_user_id")
        if owner and owner != user.clerk_user_id:
            raise StripeCustomerAlreadyLinked(
                "That customer's metadata.clerk_user_id names another Clerk user."
            )
        if owner != user.clerk_user_id and user.clerk_user_id:
            with _translated():
                client.v1.customers.update(
                    customer_id, params={"metadata": {"clerk_user_id": user.clerk_user_id}}
                )
        user.stripe_customer_id = customer_id
        try:
            session.flush()
        except IntegrityError:
            raise StripeCustomerAlreadyLinked() from None
        return Outcome("linked", customer_id)


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


@dataclass(frozen=True)
class Drift:
    kind: str
    clerk_user_id: str | None
    customer_id: str | None
    user_id: int | None = None
    detail: str = ""


# Each kind of drift, and the task that repairs it (None: an operator decides).
DRIFT_KINDS: dict[str, str | None] = {
    "user_without_customer": ENSURE_STRIPE_CUSTOMER,
    # A customer.deleted event unlinked the user: --fix gives it a new customer.
    "customer_deleted": ENSURE_STRIPE_CUSTOMER,
    "email_mismatch": PUSH_CUSTOMER_CHANGES,
    "deleted_not_marked": MARK_CUSTOMER_DELETED,
    "missing_customer": None,
    "orphan_customer": None,
    "duplicate_customer": None,
    # A live subscription whose customer is linked to no user: nobody here benefits from it.
    "orphan_subscription": None,
}


@dataclass
class ReconcileReport:
    users_checked: int = 0
    customers_checked: int = 0
    subscriptions_checked: int = 0
    # Customers without metadata.clerk_user_id: made outside the gateway; not drift.
    unmanaged_customers: int = 0
    drifts: list[Drift] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for drift in self.drifts if drift.kind == kind)


def reconcile(
    session: Session,
    client: stripe.StripeClient,
    progress: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """Compare the users table with Stripe's customers; read-only on both sides. `progress` is
    told of each customer read (the long part: Stripe pages of 100)."""
    report = ReconcileReport()
    customers: dict[str, dict[str, Any]] = {}
    by_clerk: dict[str, list[dict[str, Any]]] = {}
    with _translated():
        for obj in client.v1.customers.list(params={"limit": LIST_PAGE_SIZE}).auto_paging_iter():
            customer = obj.to_dict()
            customers[customer["id"]] = customer
            if progress is not None:
                progress(1)
            clerk_id = (customer.get("metadata") or {}).get("clerk_user_id")
            if clerk_id:
                by_clerk.setdefault(clerk_id, []).append(customer)
            else:
                report.unmanaged_customers += 1
    report.customers_checked = len(customers)

    rows = session.execute(
        select(
            User.id,
            User.clerk_user_id,
            User.email,
            User.stripe_customer_id,
            User.is_active,
            User.deleted_at,
            User.stripe_customer_deleted_at,
        ).order_by(User.id)
    ).all()
    session.rollback()
    report.users_checked = len(rows)
    by_clerk_user = {row.clerk_user_id: row for row in rows if row.clerk_user_id}
    linked = {row.stripe_customer_id: row for row in rows if row.stripe_customer_id}
    for row in rows:
        active = row.is_active and row.deleted_at is None
        if row.stripe_customer_id is None:
            if active and row.clerk_user_id:
                existing = [c["id"] for c in by_clerk.get(row.clerk_user_id, [])]
                detail = f"unlinked customer exists: {existing[0]}" if existing else ""
                kind = "user_without_customer"
                if row.stripe_customer_deleted_at is not None:
                    kind = "customer_deleted"
                    detail = detail or f"deleted at {isoformat(row.stripe_customer_deleted_at)}"
                report.drifts.append(Drift(kind, row.clerk_user_id, None, row.id, detail))
            continue
        linked_customer = customers.get(row.stripe_customer_id)
        if linked_customer is None:
            report.drifts.append(
                Drift("missing_customer", row.clerk_user_id, row.stripe_customer_id, row.id)
            )
            continue
        if active and (linked_customer.get("email") or "").lower() != (row.email or "").lower():
            report.drifts.append(
                Drift("email_mismatch", row.clerk_user_id, row.stripe_customer_id, row.id)
            )
        metadata = linked_customer.get("metadata") or {}
        if not active and row.deleted_at is not None and not metadata.get("clerk_deleted_at"):
            report.drifts.append(
                Drift("deleted_not_marked", row.clerk_user_id, row.stripe_customer_id, row.id)
            )

    for clerk_id, owned in by_clerk.items():
        owner = by_clerk_user.get(clerk_id)
        for customer in owned:
            if owner is None:
                report.drifts.append(Drift("orphan_customer", clerk_id, customer["id"]))
            elif customer["id"] not in linked and owner.stripe_customer_id is not None:
                report.drifts.append(
                    Drift(
                        "duplicate_customer",
                        clerk_id,
                        customer["id"],
                        owner.id,
                        f"user is linked to {owner.stripe_customer_id}",
                    )
                )

    # Stripe's default listing leaves out canceled and expired subscriptions: the live ones.
    with _translated():
        pages = client.v1.subscriptions.list(params={"limit": LIST_PAGE_SIZE})
        for listed in pages.auto_paging_iter():
            report.subscriptions_checked += 1
            subscription = listed.to_dict()
            customer_id = _id_of(subscription.get("customer"))
            if customer_id is None or customer_id in linked:
                continue
            metadata = (customers.get(customer_id) or {}).get("metadata") or {}
            report.drifts.append(
                Drift(
                    "orphan_subscription",
                    metadata.get("clerk_user_id"),
                    customer_id,
                    detail=f"{subscription['id']} ({subscription.get('status')})",
                )
            )
    return report


def _id_of(value: Any) -> str | None:
    """An expandable field: the id, or the expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


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
        with _translated(passthrough=(stripe.IdempotencyError,)):
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
    with _translated():
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
        with _translated(passthrough=(stripe.InvalidRequestError,)):
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
    with _translated():
        for obj in client.v1.customers.list(params={"limit": LIST_PAGE_SIZE}).auto_paging_iter():
            customer = obj.to_dict()
            if (customer.get("metadata") or {}).get("clerk_user_id") == clerk_user_id:
                yield customer


def _retrieve_customer(client: stripe.StripeClient, customer_id: str) -> dict[str, Any]:
    try:
        with _translated(passthrough=(stripe.InvalidRequestError,)):
            customer = client.v1.customers.retrieve(customer_id).to_dict()
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise StripeCustomerNotFound() from None
        raise _permanent(exc) from None
    if customer.get("deleted"):
        raise StripeCustomerNotFound()
    return customer


def _created_before(user: User, moment: datetime) -> bool:
    created = user.created_at
    if created is None:
        return True
    return created < moment


def _lock_stripe_link(session: Session, user_id: int) -> None:
    """Serialise Stripe jobs of one user until the transaction ends.

    Ten duplicate jobs must not make ten create calls (test servers ignore idempotency keys, and
    real Stripe answers a concurrent same-key request with 409). Its own lock space, not
    lock_clerk_user's, so webhook events never wait on a Stripe call.
    """
    advisory_xact_lock(session, f"stripe-customer:{user_id}")


def _locked_user(session: Session, user_id: int) -> User | None:
    """The user, read after taking its Stripe lock: what an earlier job left is what we see."""
    _lock_stripe_link(session, user_id)
    return session.get(User, user_id)


@contextmanager
def _transaction(session: Session) -> Iterator[None]:
    """Commit on success, roll back on any error (which also releases the per-user lock)."""
    try:
        yield
    except BaseException:
        session.rollback()
        raise
    session.commit()


@contextmanager
def _translated(passthrough: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn stripe-python's errors into our two kinds: retry later, or do not retry."""
    try:
        yield
    except passthrough:
        raise
    except stripe.StripeError as exc:
        if is_transient(exc):
            raise StripeUnavailable(_describe(exc)) from None
        raise _permanent(exc) from None


def is_transient(exc: stripe.StripeError) -> bool:
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.IdempotencyError):
        return exc.http_status == 409  # a concurrent request with the same key is in flight
    if isinstance(exc, stripe.APIError):
        status = exc.http_status
        return status is None or status == 409 or status >= 500
    return False


def _permanent(exc: stripe.StripeError) -> StripeRequestFailed:
    return StripeRequestFailed(_describe(exc))


def _describe(exc: stripe.StripeError) -> str:
    # Never Stripe's message: it may echo the parameters we sent (an email address).
    parts = [type(exc).__name__, f"HTTP {exc.http_status}" if exc.http_status else "no response"]
    if exc.code:
        parts.append(f"code {exc.code}")
    if exc.request_id:
        parts.append(f"request {exc.request_id}")
    return "Stripe: " + ", ".join(parts) + "."
