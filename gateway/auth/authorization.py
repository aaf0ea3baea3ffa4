"""Organization role and permission checks: `@require(...)` on a route, the same rule for guards."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import g

from gateway.auth.claims import SessionClaims
from gateway.errors import Problem

F = TypeVar("F", bound=Callable[..., Any])


class PermissionDenied(Problem):
    status, code, title = 403, "permission_denied", "Permission denied"
    default_detail = (
        "The session's active organization does not grant this; switch to an organization "
        "where your role has the permission (Clerk setActive), then get a fresh token."
    )


def ensure_authorized(
    session: SessionClaims | None, *, role: str | None = None, permission: str | None = None
) -> None:
    """Raise PermissionDenied unless the session's organization grants `role` and `permission`.

    No session (CLERK_ENABLED=false) grants nothing: a gated route or guard stays closed.
    """
    if role is None and permission is None:
        return
    if session is None or not session.authorizes(role=role, permission=permission):
        raise PermissionDenied()


def require(*, permission: str | None = None, role: str | None = None) -> Callable[[F], F]:
    """Gate a view on the verified session's organization, as Clerk's `has()` does:

        @bp.post("/invoices")
        @require(permission="org:billing:manage")
        def create_invoice(): ...

    Runs after the auth hook (which already refused requests without a valid session).
    """
    if permission is None and role is None:
        raise TypeError("require() needs a permission or a role")

    def decorator(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            ensure_authorized(g.get("clerk_session"), role=role, permission=permission)
            return view(*args, **kwargs)

        return cast(F, guarded)

    return decorator
