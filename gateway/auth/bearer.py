"""The one reader of `Authorization: Bearer <credential>` (Clerk sessions, admin keys)."""

from __future__ import annotations


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of a Bearer Authorization header (scheme case-insensitive), else None."""
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None
