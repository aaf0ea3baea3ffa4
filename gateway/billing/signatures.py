"""Stripe-Signature verification of Stripe's webhooks, with secret rotation (CONTRACT 4.11)."""

from __future__ import annotations

import binascii
import time
from collections.abc import Sequence

import stripe

from gateway.config import Config
from gateway.webhooks.signatures import WebhookSignatureInvalid, WebhooksNotConfigured

# Stripe's own default: a signature older than five minutes is refused (replay protection).
TOLERANCE_SECONDS = 300
# Development mode only (no real keys there): a fixed, published secret, so `make run` and
# `flask dev stripe-webhook` work with nothing to configure.
DEV_STRIPE_WEBHOOK_SECRET = "whsec_clerk_gateway_development_only"  # noqa: S105 - dev only, public
SIGNATURE_INVALID_DETAIL = (
    "The Stripe-Signature header does not verify against the configured endpoint secret(s), "
    "or its timestamp is outside the 300-second tolerance."
)


def stripe_webhook_secrets(config: Config) -> tuple[str, ...]:
    """The configured secrets; in development mode without one, the dev secret."""
    if config.stripe_webhook_secrets:
        return config.stripe_webhook_secrets
    return (DEV_STRIPE_WEBHOOK_SECRET,) if config.dev_mode else ()


def not_configured() -> WebhooksNotConfigured:
    return WebhooksNotConfigured("STRIPE_WEBHOOK_SECRET is not set on this server.")


def verify_stripe_signature(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float | None = None,
) -> None:
    """Accept the body if any secret (rotation: old and new side by side) signed it recently.

    stripe-python raises SignatureVerificationError for most failures, but a body that is not
    UTF-8 raises UnicodeDecodeError, and a signature with non-ASCII characters reaches
    hmac.compare_digest, which raises TypeError: every one of them is the sender's fault, a 400.
    The library checks only that the timestamp is not too old; one too far in the future is
    refused here as well, as Svix does for Clerk's events, so a signature cannot be minted to
    stay valid for days.
    """
    if not secrets:
        raise not_configured()
    if not header or len(header) > 8192:
        raise WebhookSignatureInvalid(SIGNATURE_INVALID_DETAIL)
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE_SECONDS)
        except (
            stripe.SignatureVerificationError,
            ValueError,  # UnicodeDecodeError is one
            TypeError,
            binascii.Error,
        ):
            continue
        if signed_at(header) > (time.time() if now is None else now) + TOLERANCE_SECONDS:
            break
        return
    raise WebhookSignatureInvalid(SIGNATURE_INVALID_DETAIL)


def signed_at(header: str) -> int:
    """The t= of a header the library has just accepted (so it has one, and it is an integer)."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            return int(value)
    return 0


def sign_stripe_payload(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe computes it (t=...,v1=HMAC-SHA256)."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
