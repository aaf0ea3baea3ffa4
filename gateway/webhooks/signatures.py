"""Svix signature verification of Clerk webhooks, with secret rotation and both header spellings."""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence

from svix.webhooks import Webhook, WebhookVerificationError

from gateway.config import Config
from gateway.errors import Problem

# The header names Svix uses, then the Standard Webhooks ones; svix-* wins when both are present
# (as in the svix library itself).
HEADER_NAMES = ("id", "timestamp", "signature")
MAX_MESSAGE_ID_LENGTH = 255  # webhook_events.svix_id
# Development mode only (the app is its own Clerk there, and never runs with real keys): a fixed,
# published secret so `make run` + `flask dev webhook` work with nothing to configure.
DEV_WEBHOOK_SECRET = "whsec_Y2xlcmstZ2F0ZXdheS1kZXZlbG9wbWVudC1vbmx5"  # noqa: S105 - dev only, public


class WebhookSignatureInvalid(Problem):
    status, code, title = 400, "webhook_signature_invalid", "Webhook signature invalid"
    default_detail = (
        "The Svix signature, timestamp or headers do not verify against the configured secret."
    )


class WebhooksNotConfigured(Problem):
    status, code, title = 503, "webhooks_not_configured", "Webhooks not configured"
    default_detail = "CLERK_WEBHOOK_SECRET is not set on this server."


def webhook_secrets(config: Config) -> tuple[str, ...]:
    """The configured secrets; in development mode without one, the dev secret."""
    if config.clerk_webhook_secrets:
        return config.clerk_webhook_secrets
    return (DEV_WEBHOOK_SECRET,) if config.dev_mode else ()


def svix_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Only the signature headers, lower-cased: nothing else reaches the verifier."""
    wanted = {f"{prefix}-{name}" for prefix in ("svix", "webhook") for name in HEADER_NAMES}
    return {key.lower(): value for key, value in headers.items() if key.lower() in wanted}


def message_id(headers: Mapping[str, str]) -> str:
    """The message id exactly as the svix library resolves it (svix-id, else webhook-id)."""
    return headers.get("svix-id", headers.get("webhook-id", ""))


def verify_webhook(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """Verify `body` against every secret (rotation: any one may match); return the message id.

    svix raises WebhookVerificationError for most failures but plain ValueError subclasses
    (binascii.Error, UnicodeDecodeError, tuple-unpacking errors) for malformed signature headers
    and non-UTF-8 bodies: every one of them is the sender's fault, so every one is a 400.
    """
    if not secrets:
        raise WebhooksNotConfigured()
    wanted = svix_headers(headers)
    msg_id = message_id(wanted)
    if len(msg_id) > MAX_MESSAGE_ID_LENGTH:
        raise WebhookSignatureInvalid("The svix-id header is too long.")
    for secret in secrets:
        try:
            Webhook(secret).verify(body, wanted)
        except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError):
            continue
        return msg_id
    raise WebhookSignatureInvalid()
