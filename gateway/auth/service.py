"""Login and refresh: a verified session -> the local user, created or linked on first sight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from gateway.auth.tokens import Claims
from gateway.clerk_api import ClerkApi
from gateway.errors import Problem
from gateway.models import User
from gateway.users.service import (
    ClerkUser,
    UpsertResult,
    UserDeactivated,
    UserNotFound,
    create_user_from_claims,
    find_by_clerk_id,
    lock_clerk_user,
    upsert_clerk_user,
)


class ClerkDisabled(Problem):
    status, code, title = 503, "clerk_disabled", "Clerk authentication disabled"
    default_detail = "Sign-in is turned off on this gateway (CLERK_ENABLED=false)."


@dataclass(frozen=True)
class LoginResult:
    user: User
    # The upsert when this login made or linked the user row (gateway.billing.follow_ups decides
    # what follows it); None when the user was already here.
    change: UpsertResult | None = None


def login_user(session: Session, claims: Claims, clerk_api: ClerkApi | None) -> LoginResult:
    """Find the user by Clerk id; else fetch it from Clerk (or trust the claims) and upsert.

    Commits: the caller enqueues follow-up jobs only once the row is visible to workers.
    """
    lock_clerk_user(session, claims.sub)
    user = find_by_clerk_id(session, claims.sub)
    change = None
    if user is None:
        if clerk_api is not None:
            payload = clerk_api.get_user(claims.sub)
            if payload is None:
                raise UserNotFound("Clerk does not know this user any more; sign in again.")
            result = upsert_clerk_user(session, ClerkUser.from_payload(payload))
        else:
            result = create_user_from_claims(session, claims.data)
        user, change = result.user, result
    if user.deactivated:
        session.rollback()
        raise UserDeactivated()
    session.commit()
    return LoginResult(user, change)


def refresh_user(session: Session, claims: Claims) -> User:
    """Same session check as login, but never creates a user."""
    user = find_by_clerk_id(session, claims.sub)
    if user is None:
        raise UserNotFound("No user here for this session; log in first.")
    if user.deactivated:
        raise UserDeactivated()
    return user


def session_payload(claims: Claims) -> dict[str, Any]:
    return {
        "id": claims.session_id,
        "expires_at": claims.expires_at.isoformat().replace("+00:00", "Z"),
    }
