"""Flask commands (flask --app wsgi ...). Each prints a short summary, non-zero on failure.

The groups live here; each feature attaches its commands in its own module (imported below), so
the CLI, the routes and the worker all call the same services.
"""

from __future__ import annotations

import click
import requests
from flask import Flask
from flask.cli import AppGroup

dev = AppGroup("dev", help="Development mode: mint tokens, send signed webhooks.")
webhooks = AppGroup("webhooks", help="The webhook event ledger.")
users = AppGroup("users", help="The local users table.")
stripe = AppGroup("stripe", help="Stripe customers.")


def register(app: Flask) -> None:
    # Feature modules attach their commands to the groups above when imported.
    import gateway.auth.dev
    import gateway.billing.cli
    import gateway.users.backfill_cli
    import gateway.webhooks.cli  # noqa: F401

    for group in (dev, webhooks, users, stripe):
        app.cli.add_command(group)


def send_dev_event(label: str, target: str, body: str, headers: dict[str, str]) -> None:
    """`flask dev webhook|stripe-webhook`: POST a signed event to the local gateway and print
    its answer; exit non-zero unless it is a 200."""
    try:
        response = requests.post(target, data=body.encode(), headers=headers, timeout=10)
    except requests.RequestException as exc:
        raise click.ClickException(f"could not reach {target}: {type(exc).__name__}") from None
    click.echo(f"{label}: HTTP {response.status_code} {response.text.strip()}")
    if response.status_code != 200:
        raise SystemExit(1)
