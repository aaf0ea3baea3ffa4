"""Marks a view as reachable without a Clerk session (health, webhooks, admin, docs)."""

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def public(view: F) -> F:
    view.public = True  # type: ignore[attr-defined]
    return view


def is_public(view: object) -> bool:
    return bool(getattr(view, "public", False))
