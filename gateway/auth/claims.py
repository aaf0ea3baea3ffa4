"""Session claims normalised for Clerk token versions 1 and 2, as Clerk's own SDKs read them.

Pure: no Flask, no I/O. The rules follow @clerk/shared's jwtPayloadParser
(`__experimental_JWTPayloadToAuthObjectProperties`, `splitByScope`, `parsePermissions` with
`decimalToBinaryBits`) and authorization (`checkOrgAuthorization`, `prefixWithOrg`), so that a
guard behind this gateway and a Next.js app behind Clerk's middleware see the same session:

- version 2 (`"v": 2`): the organization is the compact `o` claim: `o.id`, `o.slg`,
  `"org:" + o.rol`; permissions are decoded from `fea` (features, scoped `o:`/`u:`/`ou:`),
  `o.per` (permission names) and `o.fpm` (one decimal bitmask over `per` per org feature,
  least significant bit first). Flat `org_*` claims in a version 2 token are ignored: Clerk
  never puts them there, so only a custom session-token template could, and it must not be able
  to pose as the organization.
- any other version (1, or none): the flat `org_id`, `org_slug`, `org_role`, `org_permissions`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_DECIMAL_RE = re.compile(r"[0-9]+")  # ASCII digits only, like the JS regex
# fpm is decoded with arbitrary precision (Clerk's decimalToBinaryBits does the same); a mask
# wider than this could only come from a forged or broken claim and is read as "no permissions".
_MAX_FPM_DIGITS = 200


class MalformedClaims(ValueError):
    """A claim Clerk's SDKs refuse to parse (e.g. a `fea` entry without a scope)."""


@dataclass(frozen=True)
class Organization:
    """The session's active organization."""

    id: str
    slug: str | None
    role: str | None  # "org:admin": always prefixed, in both versions
    permissions: tuple[str, ...]  # "org:<feature>:<permission>", in Clerk's order


@dataclass(frozen=True)
class SessionClaims:
    """Who a verified session token says the caller is; what routes and guards rely on."""

    user_id: str
    session_id: str | None
    org: Organization | None
    actor_id: str | None  # act.sub: the impersonator, when an operator acts as this user
    version: int

    def authorizes(self, *, role: str | None = None, permission: str | None = None) -> bool:
        """Clerk's `has({role, permission})`: both must hold when both are asked (AND).

        Names are compared with the `org:` prefix added when missing, so `billing:manage` and
        `org:billing:manage` ask the same. No active organization: nothing is authorized.
        """
        if role is None and permission is None:
            return True
        if self.org is None:
            return False
        if role is not None and (
            self.org.role is None or prefix_with_org(self.org.role) != prefix_with_org(role)
        ):
            return False
        return permission is None or prefix_with_org(permission) in self.org.permissions

    def to_public_dict(self) -> dict[str, Any]:
        """The body of GET /api/v1/auth/me."""
        org = self.org
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "org": None
            if org is None
            else {
                "id": org.id,
                "slug": org.slug,
                "role": org.role,
                "permissions": list(org.permissions),
            },
            "actor": None if self.actor_id is None else {"sub": self.actor_id},
        }


def normalise_session_claims(payload: dict[str, Any]) -> SessionClaims:
    """Read a verified payload. Raises MalformedClaims where Clerk's SDKs would throw."""
    version = payload.get("v")
    org = _organization_v2(payload) if version == 2 else _organization_v1(payload)
    return SessionClaims(
        user_id=_text(payload.get("sub")) or "",
        session_id=_text(payload.get("sid")),
        org=org,
        actor_id=_actor_id(payload.get("act")),
        version=2 if version == 2 else 1,
    )


def prefix_with_org(name: str) -> str:
    """Clerk's prefixWithOrg: `value.replace(/^(org:)*/, "org:")`."""
    while name.startswith("org:"):
        name = name[4:]
    return "org:" + name


def org_features(fea: Any) -> list[str]:
    """The organization features of a `fea` claim, in order (Clerk's splitByScope(fea).org)."""
    if not isinstance(fea, str) or not fea:
        return []
    features: list[str] = []
    for part in fea.split(","):
        scope, colon, value = part.strip().partition(":")
        if not colon:
            # splitByScope throws here; the order of features is what aligns fpm with them, so
            # skipping the entry would hand out another feature's permissions.
            raise MalformedClaims("a fea entry has no scope")
        if scope in ("o", "ou", "uo"):
            features.append(value)
    return features


def org_permissions(features: list[str], per: Any, fpm: Any) -> tuple[str, ...]:
    """Clerk's parsePermissions + buildOrgPermissions: `org:<feature>:<permission>` per set bit."""
    if not isinstance(per, str) or not per or not isinstance(fpm, str) or not fpm:
        return ()
    permissions = [name.strip() for name in per.split(",")]
    masks = [_decimal_mask(entry.strip()) for entry in fpm.split(",")]
    granted: list[str] = []
    for feature, mask in zip(features, masks, strict=False):
        for index, permission in enumerate(permissions):
            if mask >> index & 1:
                granted.append(f"org:{feature}:{permission}")
    return tuple(granted)


def _organization_v2(payload: dict[str, Any]) -> Organization | None:
    o = payload.get("o")
    if not isinstance(o, dict):
        return None
    org_id = _text(o.get("id"))
    if org_id is None:
        # Clerk's `has()` fails every org check without an id; so does ours (org is None).
        return None
    role = _text(o.get("rol"))
    return Organization(
        id=org_id,
        slug=_text(o.get("slg")),
        role=None if role is None else f"org:{role}",
        permissions=org_permissions(org_features(payload.get("fea")), o.get("per"), o.get("fpm")),
    )


def _organization_v1(payload: dict[str, Any]) -> Organization | None:
    org_id = _text(payload.get("org_id"))
    if org_id is None:
        return None
    permissions = payload.get("org_permissions")
    return Organization(
        id=org_id,
        slug=_text(payload.get("org_slug")),
        role=_text(payload.get("org_role")),
        permissions=tuple(p for p in permissions if isinstance(p, str))
        if isinstance(permissions, list)
        else (),
    )


def _decimal_mask(entry: str) -> int:
    # decimalToBinaryBits: anything but plain decimal digits is an empty mask.
    if not _DECIMAL_RE.fullmatch(entry) or len(entry) > _MAX_FPM_DIGITS:
        return 0
    return int(entry)


def _actor_id(act: Any) -> str | None:
    return _text(act.get("sub")) if isinstance(act, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
