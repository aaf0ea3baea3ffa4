"""The rules that keep the local users table a faithful mirror of Clerk.

Shared by login (gateway.auth), the webhook worker and `flask users backfill`, so a user reached by
any path ends up the same. Callers own the transaction; these functions only flush.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gateway.errors import Problem
from gateway.models import User
from gateway.models.base import is_storable_text, utcnow


class EmailRequired(Problem):
    status, code, title = 422, "email_required", "Primary email required"
    default_detail = "The Clerk user has no primary email address."


class UserNotFound(Problem):
    status, code, title = 404, "user_not_found", "User not found"
    default_detail = "No user with that identity exists here."


class UserDataInvalid(Problem, ValueError):
    """A Clerk user whose data the users table cannot hold (a ValueError too: for the webhook
    worker it is an unusable payload, an `invalid` event; for login a 422)."""

    status, code, title = 422, "user_data_invalid", "User data not storable"
    default_detail = (
        "The Clerk user's data does not fit this gateway (a field too long, or text with NUL "
        "or unpaired surrogates)."
    )


_Text = TypeVar("_Text", bound=str | None)
# The column sizes of users (models/user.py).
ID_LENGTH, EMAIL_LENGTH, NAME_LENGTH = 64, 320, 255


class UserDeactivated(Problem):
    status, code, title = 403, "user_deactivated", "User deactivated"
    default_detail = "This account has been deactivated."


@dataclass(frozen=True)
class ClerkUser:
    """The fields we mirror from a Clerk user object (webhook `data` or Backend API user)."""

    id: str
    primary_email: str | None
    primary_email_verified: bool
    first_name: str | None = None
    last_name: str | None = None
    image_url: str | None = None
    public_metadata: dict[str, Any] = field(default_factory=dict)
    private_metadata: dict[str, Any] = field(default_factory=dict)
    unsafe_metadata: dict[str, Any] = field(default_factory=dict)
    created_at_ms: int | None = None
    updated_at_ms: int | None = None

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> ClerkUser:
        """Parse Clerk's user JSON. Raises ValueError when it is not a user object."""
        user_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user object without an id")
        email, verified = _primary_email(data)
        return cls(
            id=storable("id", user_id, ID_LENGTH),
            primary_email=storable("email", email, EMAIL_LENGTH),
            primary_email_verified=verified,
            first_name=storable("first_name", _str_or_none(data.get("first_name")), NAME_LENGTH),
            last_name=storable("last_name", _str_or_none(data.get("last_name")), NAME_LENGTH),
            image_url=storable("image_url", _str_or_none(data.get("image_url"))),
            public_metadata=_metadata("public_metadata", data),
            private_metadata=_metadata("private_metadata", data),
            unsafe_metadata=_metadata("unsafe_metadata", data),
            created_at_ms=_ms(data.get("created_at")),
            updated_at_ms=_ms(data.get("updated_at")),
        )


class Lookup:
    """`existing` not given: the rules read the user themselves."""


LOOKUP = Lookup()


@dataclass(frozen=True)
class UpsertResult:
    user: User
    created: bool = False
    linked: bool = False
    # Fields whose value changed (Stripe cares about email and names); empty when nothing applied.
    changed: frozenset[str] = frozenset()
    skipped: str | None = None  # "stale" or "deleted" when the event changed nothing


def lock_clerk_user(session: Session, clerk_user_id: str) -> None:
    """Serialise all writers of one Clerk user until the transaction ends.

    Webhook events of one user may run on different workers at once, and a first login can race
    the user.created webhook; a per-user lock (not a table lock) keeps other users flowing.
    """
    advisory_xact_lock(session, clerk_user_id)


def lock_clerk_users(session: Session, clerk_user_ids: Iterable[str]) -> None:
    """lock_clerk_user for many users in one round trip (a worker's batch), in a fixed order so
    that two such batches can never wait on each other in a cycle."""
    advisory_xact_locks(session, clerk_user_ids)


def advisory_xact_lock(session: Session, name: str) -> None:
    """Wait for the PostgreSQL advisory lock named `name`; it is released when the transaction
    ends. A no-op on SQLite, which serialises writers itself."""
    advisory_xact_locks(session, [name])


def advisory_xact_locks(session: Session, names: Iterable[str]) -> None:
    """Wait for each named advisory lock, in the order of their keys, in one statement. Locks this
    transaction already holds are skipped (taking one again would cost a round trip for nothing)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    # The connection's transaction, begun here if need be: the locks live as long as it does.
    transaction = session.connection().get_transaction()
    owner, held = session.info.get(_HELD_LOCKS, (None, set()))
    if owner is not transaction:
        held = set()
        session.info[_HELD_LOCKS] = (transaction, held)
    wanted = {name for name in names if name not in held}
    if not wanted:
        return
    keys = sorted(_lock_key(name) for name in wanted)
    if len(keys) == 1:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": keys[0]})
    else:
        session.execute(_LOCK_MANY, {"keys": keys})
    held |= wanted


_HELD_LOCKS = "advisory_xact_locks"
# WITH ORDINALITY: the locks are taken in the array's (sorted) order.
_LOCK_MANY = text(
    "SELECT pg_advisory_xact_lock(k)"
    " FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
)


def _lock_key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def find_by_clerk_id(session: Session, clerk_user_id: str) -> User | None:
    return session.scalar(select(User).where(User.clerk_user_id == clerk_user_id))


def find_by_clerk_ids(session: Session, clerk_user_ids: Iterable[str]) -> list[User]:
    return list(session.scalars(select(User).where(User.clerk_user_id.in_(list(clerk_user_ids)))))


def find_by_email(session: Session, email: str) -> User | None:
    """Newest active match first: several rows may share an email (tombstones, old accounts)."""
    return session.scalar(
        select(User)
        .where(User.email == email.strip().lower())
        .order_by(User.is_active.desc(), User.id.desc())
        .limit(1)
    )


def upsert_clerk_user(
    session: Session,
    clerk: ClerkUser,
    existing: User | Lookup | None = LOOKUP,
    *,
    flush_updates: bool = True,
) -> UpsertResult:
    """Create or update the mirror of `clerk`, by Clerk id, else by verified email, else new.

    Never moves a user backwards in time (Svix does not order deliveries) and never brings back a
    deleted user. Raises EmailRequired when the Clerk user has no primary email. `existing`: the
    user with this Clerk id when the caller already read it (None: there is none).
    `flush_updates=False` leaves an update to the caller's next flush (a worker's batch flushes
    all its updates at once); a new user is always flushed, for its id.
    """
    if not clerk.primary_email:
        raise EmailRequired()
    user = find_by_clerk_id(session, clerk.id) if isinstance(existing, Lookup) else existing
    if user is not None:
        if user.deleted_at is not None:
            return UpsertResult(user, skipped="deleted")
        if _is_stale(user, clerk):
            return UpsertResult(user, skipped="stale")
        changed = _apply(user, clerk)
        if flush_updates:
            session.flush()
        return UpsertResult(user, changed=changed)

    # Linking by email is only safe when Clerk has verified it: otherwise anyone could sign up
    # with a victim's address and inherit the victim's account.
    if clerk.primary_email_verified:
        candidate = session.scalar(
            select(User)
            .where(User.clerk_user_id.is_(None), func.lower(User.email) == clerk.primary_email)
            .order_by(User.id)
            .limit(1)
            .with_for_update()
        )
        if candidate is not None:
            candidate.clerk_user_id = clerk.id
            changed = _apply(candidate, clerk)
            session.flush()
            return UpsertResult(candidate, linked=True, changed=changed | {"clerk_user_id"})

    user = User(clerk_user_id=clerk.id, is_active=True)
    changed = _apply(user, clerk)
    session.add(user)
    session.flush()
    return UpsertResult(user, created=True, changed=changed)


def create_user_from_claims(session: Session, claims: dict[str, Any]) -> UpsertResult:
    """First login without a Backend API key: the session claims are all we know."""
    email = claims.get("email")
    email = email.strip().lower() if isinstance(email, str) and email.strip() else None
    user = User(
        clerk_user_id=storable("sub", claims["sub"], ID_LENGTH),
        email=storable("email", email, EMAIL_LENGTH),
        first_name=storable("first_name", _str_or_none(claims.get("first_name")), NAME_LENGTH),
        last_name=storable("last_name", _str_or_none(claims.get("last_name")), NAME_LENGTH),
        is_active=True,
    )
    session.add(user)
    session.flush()
    return UpsertResult(user, created=True, changed=frozenset({"email"}))


def soft_delete_clerk_user(
    session: Session, clerk_user_id: str, existing: User | Lookup | None = LOOKUP
) -> UpsertResult:
    """Deactivate; for an unknown user leave a tombstone so a late user.created cannot revive it."""
    user = find_by_clerk_id(session, clerk_user_id) if isinstance(existing, Lookup) else existing
    now = utcnow()
    if user is None:
        user = User(clerk_user_id=clerk_user_id, is_active=False, deleted_at=now)
        session.add(user)
        session.flush()
        return UpsertResult(user, created=True, changed=frozenset({"deleted_at"}))
    if user.deleted_at is not None:
        return UpsertResult(user, skipped="deleted")
    user.is_active = False
    user.deleted_at = now
    session.flush()
    return UpsertResult(user, changed=frozenset({"is_active", "deleted_at"}))


def ms_to_datetime(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def _is_stale(user: User, clerk: ClerkUser) -> bool:
    return is_stale(user.clerk_updated_at, clerk.updated_at_ms)


def is_stale(stored: datetime | None, incoming_ms: int | None) -> bool:
    """An incoming Clerk `updated_at` (ms) no newer than the stored one changes nothing."""
    if stored is None or incoming_ms is None:
        return False
    return incoming_ms <= round(stored.timestamp() * 1000)


def _apply(user: User, clerk: ClerkUser) -> frozenset[str]:
    values: dict[str, Any] = {
        "email": clerk.primary_email,
        "first_name": clerk.first_name,
        "last_name": clerk.last_name,
        "image_url": clerk.image_url,
        "clerk_public_metadata": clerk.public_metadata,
        "clerk_private_metadata": clerk.private_metadata,
        "clerk_unsafe_metadata": clerk.unsafe_metadata,
    }
    if clerk.created_at_ms is not None:
        values["clerk_created_at"] = ms_to_datetime(clerk.created_at_ms)
    if clerk.updated_at_ms is not None:
        values["clerk_updated_at"] = ms_to_datetime(clerk.updated_at_ms)
    changed = {name for name, value in values.items() if getattr(user, name) != value}
    for name in changed:
        setattr(user, name, values[name])
    return frozenset(changed)


def _primary_email(data: dict[str, Any]) -> tuple[str | None, bool]:
    primary_id = data.get("primary_email_address_id")
    addresses = data.get("email_addresses")
    if not primary_id or not isinstance(addresses, list):
        return None, False
    for entry in addresses:
        if isinstance(entry, dict) and entry.get("id") == primary_id:
            address = entry.get("email_address")
            if not isinstance(address, str) or "@" not in address:
                return None, False
            verification = entry.get("verification")
            verified = isinstance(verification, dict) and verification.get("status") == "verified"
            return address.strip().lower(), verified
    return None, False


def storable(name: str, value: _Text, limit: int | None = None) -> _Text:
    """`value` if the users table can hold it, else UserDataInvalid naming the field.

    Refused rather than cut: a truncated email or id would be another person's.
    """
    if value is None:
        return value
    if (limit is not None and len(value) > limit) or not is_storable_text(value):
        raise UserDataInvalid(
            f"The Clerk user's {name} is too long or not storable text; fix it in Clerk."
        )
    return value


def _metadata(name: str, data: dict[str, Any]) -> dict[str, Any]:
    value = _dict(data.get(name))
    if value and not _storable_json(value):
        raise UserDataInvalid(f"The Clerk user's {name} holds text that cannot be stored.")
    return value


def _storable_json(value: Any) -> bool:
    if isinstance(value, str):
        return is_storable_text(value)
    if isinstance(value, dict):
        return all(is_storable_text(k) and _storable_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable_json(item) for item in value)
    return True


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _ms(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not _MIN_MS <= value <= _MAX_MS:
        # Not a time a datetime (or PostgreSQL) holds: converting it would raise later.
        raise UserDataInvalid("The Clerk user's timestamps are out of range.")
    return int(value)


# 0001-01-02 and 9999-12-30 in Unix milliseconds: what ms_to_datetime can convert in any zone.
_MIN_MS, _MAX_MS = -62135510400000, 253402128000000
