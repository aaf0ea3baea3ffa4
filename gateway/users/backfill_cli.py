"""`flask users backfill`: attach the command to the `users` group."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
from flask import current_app

from gateway.billing.follow_ups import send_follow_ups, stripe_follow_ups
from gateway.cli import CommandFailed, Progress
from gateway.cli import users as users_group
from gateway.errors import Problem
from gateway.extensions import db
from gateway.jobs import enqueue
from gateway.users.backfill import (
    PAGE_SIZE,
    BackfillCounts,
    backfill_api,
    backfill_users,
    fetch_user_pages,
)
from gateway.users.service import UpsertResult


@users_group.command("backfill")
@click.option("--page-size", default=PAGE_SIZE, show_default=True, type=click.IntRange(1, 500))
def backfill_command(page_size: int) -> None:
    """Page through the Clerk Backend API's users and upsert each (idempotent)."""
    config = current_app.config["GATEWAY"]
    if not config.clerk_secret_key:
        raise CommandFailed("CLERK_SECRET_KEY is not set; the Backend API needs it.")
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def follow_up(result: UpsertResult) -> None:
        # The same rule as login and the webhook worker; what the broker refuses, the sweep sends.
        send_follow_ups(
            lambda task, user_id: enqueue(app, task, user_id), stripe_follow_ups(result, config)
        )

    counts = BackfillCounts()
    api = backfill_api(config.clerk_api_url, config.clerk_secret_key)
    pages = fetch_user_pages(api, page_size=page_size, counts=counts)
    try:
        with Progress("backfill") as progress:
            backfill_users(db.session(), _counted(pages, progress), counts, after_commit=follow_up)
    except Problem as exc:
        db.session.rollback()
        _print_counts(counts)
        raise CommandFailed(
            f"{exc.code}: {exc.detail} Re-run to continue; it is idempotent."
        ) from None
    _print_counts(counts)
    if counts.no_email or counts.invalid:
        click.echo("users without a primary email (or not user objects) were skipped.")


def _counted(pages: Iterator[list[Any]], progress: Progress) -> Iterator[list[Any]]:
    for page in pages:
        yield page
        progress.advance(len(page), "users")


def _print_counts(counts: BackfillCounts) -> None:
    click.echo("backfill: " + " ".join(f"{k}={v}" for k, v in counts.as_dict().items()))
