"""Flask commands (flask --app wsgi ...). Each prints a short summary, non-zero on failure.

The groups live here; each feature attaches its commands in its own module (imported below), so
the CLI, the routes and the worker all call the same services.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

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
    from gateway.retention_cli import prune_command

    for group in (dev, webhooks, users, stripe):
        app.cli.add_command(group)
    app.cli.add_command(prune_command)


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


class Progress:
    """Progress of long CLI work (backfill, reconcile, bulk replay, prune).

    On a terminal: one line redrawn in place, at most ten times a second, erased at the end. Not
    on a terminal (a one-off dyno's log, cron mail, a pipe): nothing, so the output is the
    command's own one-line summary and nothing else.
    """

    INTERVAL_SECONDS = 0.1

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None):
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._drawn_at = 0.0
        self._drawn = False

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn_at < self.INTERVAL_SECONDS and self.done != self.total:
            return
        self._drawn_at = now
        of_total = f"/{self.total}" if self.total is not None else ""
        self._stream.write(f"\r\x1b[K{self.label}: {self.done}{of_total} {note}".rstrip())
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
