"""`flask prune [--dry-run]`: the daily retention job, now."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from gateway.cli import Progress
from gateway.extensions import db
from gateway.retention import prune_old_records


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="count what would be deleted, delete nothing")
@with_appcontext
def prune_command(dry_run: bool) -> None:
    """Delete settled webhook events and guard_requests rows past retention (failed events stay)."""
    config = current_app.config["GATEWAY"]
    click.echo(
        f"retention: webhook events {config.webhook_retention_days} days (failed kept), "
        f"guard_requests {config.guard_audit_retention_days} days"
    )
    with Progress("prune") as progress:
        result = prune_old_records(
            db.session(),
            config,
            dry_run=dry_run,
            progress=lambda table, count: progress.advance(count, table),
        )
    click.echo(result.summary())
