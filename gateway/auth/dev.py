"""Development mode: the app is its own Clerk-like issuer (key in instance/, JWKS at /dev/)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, current_app, jsonify
from jwt.algorithms import RSAAlgorithm

from gateway.auth.public import public
from gateway.cli import CommandFailed
from gateway.cli import dev as dev_group
from gateway.config import Config

KEY_FILE = "dev-session-key.pem"
bp = Blueprint("dev", __name__, url_prefix="/dev")


def dev_issuer(config: Config) -> str:
    """Also the base of the JWKS URL, as with Clerk's Frontend API."""
    return f"http://127.0.0.1:{config.port}/dev"


def load_or_create_dev_key(instance_path: str) -> rsa.RSAPrivateKey:
    """One key per instance folder, created once: web workers and `flask dev token` share it."""
    path = Path(instance_path) / KEY_FILE
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        # link() fails if another process won the race; everyone then reads the winner's key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise CommandFailed(f"{path} is not an RSA private key; delete it to regenerate")
    return loaded


def dev_kid(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "dev-" + hashlib.sha256(der).hexdigest()[:16]


def dev_jwks(private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    public_key = private_key.public_key()
    jwk = json.loads(RSAAlgorithm.to_jwk(public_key))
    jwk.update(kid=dev_kid(public_key), alg="RS256", use="sig")
    return {"keys": [jwk]}


@dataclass(frozen=True)
class DevOrganization:
    """The active organization of a development token."""

    id: str
    role: str = "org:member"
    permissions: tuple[str, ...] = ()
    slug: str | None = None


def mint_dev_token(
    config: Config,
    user_id: str,
    email: str | None = None,
    ttl_seconds: int = 3600,
    org: DevOrganization | None = None,
    actor_id: str | None = None,
) -> str:
    key = load_or_create_dev_key(config.instance_path)
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "sid": "sess_dev_" + secrets.token_hex(8),
        "iss": dev_issuer(config),
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl_seconds,
        "v": 2,
    }
    if email:
        claims["email"] = email
    if org is not None:
        claims |= version_2_org_claims(org)
    if actor_id:
        claims["act"] = {"sub": actor_id}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": dev_kid(key.public_key())})


def version_2_org_claims(org: DevOrganization) -> dict[str, Any]:
    """`o` and `fea` as Clerk encodes them in a version 2 token (the inverse of
    gateway.auth.claims): features and permission names in order of first use, one bitmask per
    feature, bit i for the i-th permission name."""
    features: list[str] = []
    names: list[str] = []
    for permission in org.permissions:
        feature, name = _split_permission(permission)
        if feature not in features:
            features.append(feature)
        if name not in names:
            names.append(name)
    masks = [0] * len(features)
    for permission in org.permissions:
        feature, name = _split_permission(permission)
        masks[features.index(feature)] |= 1 << names.index(name)
    o: dict[str, Any] = {"id": org.id, "rol": org.role.removeprefix("org:")}
    if org.slug:
        o["slg"] = org.slug
    if names:
        o["per"] = ",".join(names)
        o["fpm"] = ",".join(str(mask) for mask in masks)
    claims: dict[str, Any] = {"o": o}
    if features:
        claims["fea"] = ",".join(f"o:{feature}" for feature in features)
    return claims


def _split_permission(permission: str) -> tuple[str, str]:
    parts = permission.removeprefix("org:").split(":")
    if len(parts) != 2 or not all(parts):
        raise click.BadParameter(
            f"{permission!r} is not org:<feature>:<permission>", param_hint="--permission"
        )
    return parts[0], parts[1]


@bp.get("/.well-known/jwks.json")
@public
def jwks() -> Any:
    config: Config = current_app.config["GATEWAY"]
    return jsonify(dev_jwks(load_or_create_dev_key(config.instance_path)))


@dev_group.command("token")
@click.option("--user", "user_id", required=True, help="The Clerk user id (sub), e.g. user_123.")
@click.option("--email", default=None, help="Put an email claim in the token.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(1, 86400))
@click.option("--org", "org_id", default=None, help="Active organization id, e.g. org_acme.")
@click.option("--org-slug", default=None, help="Its slug (with --org).")
@click.option(
    "--role", default="org:member", show_default=True, help="Organization role (with --org)."
)
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    help="Organization permission org:<feature>:<permission> (repeatable; with --org).",
)
@click.option("--actor", default=None, help="Impersonating user id (act.sub).")
def token_command(
    user_id: str,
    email: str | None,
    ttl: int,
    org_id: str | None,
    org_slug: str | None,
    role: str,
    permissions: tuple[str, ...],
    actor: str | None,
) -> None:
    """Print a session token (version 2) signed by the development key."""
    config: Config = current_app.config["GATEWAY"]
    if not config.dev_mode:
        raise CommandFailed(
            "development mode is off: it needs GATEWAY_ENV=development and none of "
            "CLERK_PUBLISHABLE_KEY, CLERK_JWKS_URL, CLERK_JWT_KEY"
        )
    if org_id is None and (permissions or org_slug):
        raise click.UsageError("--permission and --org-slug need --org")
    org = None if org_id is None else DevOrganization(org_id, role, permissions, org_slug)
    click.echo(mint_dev_token(config, user_id, email, ttl, org=org, actor_id=actor))
