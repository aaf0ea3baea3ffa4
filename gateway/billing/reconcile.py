"""`flask stripe reconcile`: compare the users table with Stripe, read-only on both sides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.billing.client import LIST_PAGE_SIZE, translated
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, MARK_CUSTOMER_DELETED, PUSH_CUSTOMER_CHANGES
from gateway.models import User
from gateway.models.base import isoformat


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
    with translated():
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
    with translated():
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
