"""`flask stripe link`: an operator links an existing Stripe customer to a user."""

from __future__ import annotations

from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.billing.client import permanent_problem, translated
from gateway.billing.customers import Outcome, lock_stripe_link, stripe_transaction
from gateway.billing.problems import (
    StripeCustomerAlreadyLinked,
    StripeCustomerNotFound,
    StripeUserAlreadyLinked,
)
from gateway.models import User


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
    with stripe_transaction(session):
        lock_stripe_link(session, user.id)
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
            with translated():
                client.v1.customers.update(
                    customer_id, params={"metadata": {"clerk_user_id": user.clerk_user_id}}
                )
        user.stripe_customer_id = customer_id
        try:
            session.flush()
        except IntegrityError:
            raise StripeCustomerAlreadyLinked() from None
        return Outcome("linked", customer_id)


def _retrieve_customer(client: stripe.StripeClient, customer_id: str) -> dict[str, Any]:
    try:
        with translated(passthrough=(stripe.InvalidRequestError,)):
            customer = client.v1.customers.retrieve(customer_id).to_dict()
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise StripeCustomerNotFound() from None
        raise permanent_problem(exc) from None
    if customer.get("deleted"):
        raise StripeCustomerNotFound()
    return customer
