"""Flask commands (flask --app wsgi ...). Each prints a short summary, non-zero on failure."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """Command groups are added here as features land."""
