"""`flask stripe link|reconcile`: attach the commands to the `stripe` group."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import stripe as stripe_lib
from flask import current_app

from gateway.billing.stripe import (
    DRIFT_KINDS,
    StripeDisabled,
    client_from_config,
    link_user_to_stripe_customer,
    reconcile,
)
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
        _fail(exc)
    click.echo(f"{outcome.status}: {clerk_user_id} -> {customer_id}")


@stripe_group.command("reconcile")
@click.option("--fix", is_flag=True, help="Enqueue the jobs that repair what can be repaired.")
def reconcile_command(fix: bool) -> None:
    """Users without a customer, customers without a user, mismatched emails."""
    client = _client()
    try:
        report = reconcile(db.session(), client)
    except Problem as exc:
        _fail(exc)
    click.echo(f"{'drift':<24}{'count':>6}  repair")
    for kind, task in DRIFT_KINDS.items():
        repair = f"--fix enqueues {task.rsplit('.', 1)[-1]}" if task else "operator"
        click.echo(f"{kind:<24}{report.count(kind):>6}  {repair}")
    click.echo(
        f"checked {report.users_checked} users and {report.customers_checked} customers "
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
        click.echo("error: the broker did not take every job; run again.", err=True)
        sys.exit(1)


def _client() -> stripe_lib.StripeClient:
    client = client_from_config(current_app.config["GATEWAY"])
    if client is None:
        _fail(StripeDisabled())
    return client


def _fail(exc: Problem) -> NoReturn:
    db.session.rollback()
    click.echo(f"error: {exc.code}: {exc.detail}", err=True)
    sys.exit(1)
