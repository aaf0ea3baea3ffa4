"""`flask stripe link|reconcile` and `flask dev stripe-webhook`."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import click
import stripe as stripe_lib
from flask import current_app

from gateway.billing.client import client_from_config
from gateway.billing.link import link_user_to_stripe_customer
from gateway.billing.problems import StripeDisabled
from gateway.billing.reconcile import DRIFT_KINDS, reconcile
from gateway.billing.signatures import sign_stripe_payload, stripe_webhook_secrets
from gateway.billing.subscriptions import (
    CUSTOMER_DELETED,
    STRIPE_HANDLED_TYPES,
    SUBSCRIPTION_DELETED,
)
from gateway.cli import CommandFailed, Progress, send_dev_event
from gateway.cli import dev as dev_group
from gateway.cli import stripe as stripe_group
from gateway.errors import Problem
from gateway.extensions import db
from gateway.jobs import enqueue
from gateway.users.service import UserNotFound, find_by_clerk_id


@stripe_group.command("link")
@click.argument("clerk_user_id")
@click.argument("customer_id")
@click.option("--replace", is_flag=True, help="Replace the user's current customer.")
def link_command(clerk_user_id: str, customer_id: str, replace: bool) -> None:
    """Link an existing Stripe customer to a user (refused if it belongs to another)."""
    client = _client()
    try:
        user = find_by_clerk_id(db.session(), clerk_user_id)
        if user is None:
            raise UserNotFound()
        outcome = link_user_to_stripe_customer(
            db.session(), client, user, customer_id, replace=replace
        )
    except Problem as exc:
        raise _failed(exc) from None
    click.echo(f"{outcome.status}: {clerk_user_id} -> {customer_id}")


@stripe_group.command("reconcile")
@click.option("--fix", is_flag=True, help="Enqueue the jobs that repair what can be repaired.")
def reconcile_command(fix: bool) -> None:
    """Users without a customer (or whose customer was deleted), customers and subscriptions
    without a user, mismatched emails."""
    client = _client()
    try:
        with Progress("reconcile: Stripe customers read") as progress:
            report = reconcile(db.session(), client, progress.advance)
    except Problem as exc:
        raise _failed(exc) from None
    click.echo(f"{'drift':<24}{'count':>6}  repair")
    for kind, task in DRIFT_KINDS.items():
        repair = f"--fix enqueues {task.rsplit('.', 1)[-1]}" if task else "operator"
        click.echo(f"{kind:<24}{report.count(kind):>6}  {repair}")
    click.echo(
        f"checked {report.users_checked} users, {report.customers_checked} customers and "
        f"{report.subscriptions_checked} live subscriptions "
        f"({report.unmanaged_customers} without metadata.clerk_user_id, not ours)"
    )
    for drift in report.drifts:
        click.echo(
            f"  {drift.kind}: user {drift.clerk_user_id or '-'} customer {drift.customer_id or '-'}"
            + (f" ({drift.detail})" if drift.detail else "")
        )
    if not fix:
        return
    queued = failed = 0
    done: set[tuple[str, int]] = set()
    for drift in report.drifts:
        task = DRIFT_KINDS[drift.kind]
        if task is None or drift.user_id is None or (task, drift.user_id) in done:
            continue
        done.add((task, drift.user_id))
        if enqueue(current_app._get_current_object(), task, drift.user_id):  # type: ignore[attr-defined]
            queued += 1
        else:
            failed += 1
    click.echo(f"fix: {queued} jobs queued, {failed} not queued")
    if failed:
        raise CommandFailed("the broker did not take every job; run again")


def _client() -> stripe_lib.StripeClient:
    client = client_from_config(current_app.config["GATEWAY"])
    if client is None:
        raise _failed(StripeDisabled())
    return client


def _failed(exc: Problem) -> CommandFailed:
    db.session.rollback()
    return CommandFailed.from_problem(exc)


@dev_group.command("stripe-webhook")
@click.argument("event_type", type=click.Choice(sorted(STRIPE_HANDLED_TYPES)))
@click.option("--customer", "customer_id", default=None, help="Stripe customer id, e.g. cus_123")
@click.option(
    "--user",
    "clerk_user_id",
    default=None,
    help="Use this user's customer; one without gets cus_dev_<user id> linked (dev only).",
)
@click.option("--subscription", "subscription_id", default=None, help="default sub_dev_<customer>")
@click.option("--status", default="active", show_default=True, help="the subscription's status")
@click.option("--price", "price_id", default="price_dev", show_default=True)
@click.option("--period-end", type=int, default=None, help="Unix seconds (default: in 30 days)")
@click.option("--url", default=None, help="default http://127.0.0.1:$PORT/webhooks/stripe")
def dev_stripe_webhook_command(
    event_type: str,
    customer_id: str | None,
    clerk_user_id: str | None,
    subscription_id: str | None,
    status: str,
    price_id: str,
    period_end: int | None,
    url: str | None,
) -> None:
    """Send a Stripe-signed event to the running local gateway (development mode only)."""
    config = current_app.config["GATEWAY"]
    if not config.dev_mode:
        raise CommandFailed("development mode only (GATEWAY_ENV=development, no Clerk keys)")
    if clerk_user_id:
        customer_id = _dev_customer_of(clerk_user_id)
    if not customer_id:
        raise CommandFailed("--customer or --user is required")
    now = int(time.time())
    obj: dict[str, Any] = {"id": customer_id, "object": "customer", "deleted": True}
    if event_type != CUSTOMER_DELETED:
        item = {"id": "si_dev", "object": "subscription_item", "price": {"id": price_id}}
        obj = {
            "id": subscription_id or f"sub_dev_{customer_id}",
            "object": "subscription",
            "customer": customer_id,
            "status": "canceled" if event_type == SUBSCRIPTION_DELETED else status,
            "current_period_end": period_end or now + 30 * 86400,
            "items": {"object": "list", "data": [item]},
        }
    event_id = f"evt_dev_{uuid.uuid4().hex[:24]}"
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": now,
            "data": {"object": obj},
        }
    )
    headers = {
        "Stripe-Signature": sign_stripe_payload(body, stripe_webhook_secrets(config)[0], now),
        "Content-Type": "application/json",
    }
    target = url or f"http://127.0.0.1:{config.port}/webhooks/stripe"
    send_dev_event(f"{event_type} {event_id}", target, body, headers)


def _dev_customer_of(clerk_user_id: str) -> str:
    """The user's customer; in development mode (no Stripe there) link a made-up one if none."""
    user = find_by_clerk_id(db.session(), clerk_user_id)
    if user is None:
        raise CommandFailed(f"user_not_found: {clerk_user_id}")
    if user.stripe_customer_id is None:
        user.stripe_customer_id = f"cus_dev_{clerk_user_id}"
        db.session.commit()
        click.echo(f"linked {clerk_user_id} to {user.stripe_customer_id} (development only)")
    return user.stripe_customer_id
