"""Flask commands (flask --app wsgi ...). Each prints a short summary, non-zero on failure.

The groups live here; each feature attaches its commands in its own module (imported below), so
the CLI, the routes and the worker all call the same services.
"""

from __future__ import annotations

from flask import Flask
from flask.cli import AppGroup

dev = AppGroup("dev", help="Development mode: mint tokens, send signed webhooks.")
webhooks = AppGroup("webhooks", help="The webhook event ledger.")
users = AppGroup("users", help="The local users table.")
stripe = AppGroup("stripe", help="Stripe customers.")


def register(app: Flask) -> None:
    # Feature modules attach their commands to the groups above when imported.
    from gateway.webhooks import cli as webhooks_cli  # noqa: F401 - attaches its commands

    for group in (dev, webhooks, users, stripe):
        app.cli.add_command(group)
