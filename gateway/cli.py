"""The `flask` command groups and what every command shares. Each prints a short summary.

Feature modules attach their commands to these groups (gateway/auth/dev.py, gateway/billing/cli.py,
gateway/users/backfill_cli.py, gateway/webhooks/cli.py); app.register_commands imports them. This
module imports no feature, so the features depend on it and never the other way round.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

import click
import requests
from flask.cli import AppGroup

from gateway.errors import Problem

dev = AppGroup("dev", help="Development mode: mint tokens, send signed webhooks.")
webhooks = AppGroup("webhooks", help="The webhook event ledger.")
users = AppGroup("users", help="The local users table.")
stripe = AppGroup("stripe", help="Stripe customers.")
GROUPS = (dev, webhooks, users, stripe)


class CommandFailed(click.ClickException):
    """The one way a command fails: `Error: <message>` on stderr, exit status 1."""

    @classmethod
    def from_problem(cls, problem: Problem) -> CommandFailed:
        return cls(f"{problem.code}: {problem.detail}")


def send_dev_event(label: str, target: str, body: str, headers: dict[str, str]) -> None:
    """`flask dev webhook|stripe-webhook`: POST a signed event to the local gateway and print
    its answer; fail unless it is a 200."""
    try:
        response = requests.post(target, data=body.encode(), headers=headers, timeout=10)
    except requests.RequestException as exc:
        raise CommandFailed(f"could not reach {target}: {type(exc).__name__}") from None
    click.echo(f"{label}: HTTP {response.status_code} {response.text.strip()}")
    if response.status_code != 200:
        raise CommandFailed(f"{label}: the gateway answered HTTP {response.status_code}")


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
