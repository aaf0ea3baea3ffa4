"""Sign Clerk's sample webhook payloads with the real svix library, and post them."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from svix.webhooks import Webhook

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the svix test-suite secret (vector A)
OTHER_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"  # vector B's: plays the rotated-in key

_SAMPLES = {
    "user.created": "webhook-user.created.event-catalog.json",
    "user.updated": "webhook-user.updated.event-catalog.json",
    "user.deleted": "webhook-user.deleted.event-catalog.json",
}


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def svix_vectors() -> dict[str, Any]:
    return load_fixture("svix/svix_test_vectors.json")


def clerk_event(
    event_type: str,
    user_id: str | None = None,
    email: str | None = None,
    updated_at: int | None = None,
    **data: Any,
) -> dict[str, Any]:
    """Clerk's own sample for `event_type` with this test's user id, email and updated_at."""
    sample = "clerk/" + _SAMPLES.get(event_type, _SAMPLES["user.updated"])
    event = copy.deepcopy(load_fixture(sample))
    event["type"] = event_type
    body = event["data"]
    if user_id:
        body["id"] = user_id
    if email and "email_addresses" in body:
        body["email_addresses"][0]["email_address"] = email
    if updated_at is not None and event_type != "user.deleted":
        body["updated_at"] = updated_at
    body.update(data)
    event["timestamp"] = int(time.time() * 1000)
    return event


def new_user_id() -> str:
    return "user_" + uuid.uuid4().hex[:24]


def new_msg_id() -> str:
    return "msg_" + uuid.uuid4().hex


def sign(
    body: bytes | str,
    msg_id: str | None = None,
    secret: str = SECRET,
    timestamp: float | None = None,
    prefix: str = "svix",
) -> dict[str, str]:
    """Svix headers for `body`, signed by the svix library at `timestamp` (default: now)."""
    text = body.decode() if isinstance(body, bytes) else body
    msg_id = msg_id or new_msg_id()
    moment = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    signature = Webhook(secret).sign(msg_id, moment, text)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(moment.timestamp())),
        f"{prefix}-signature": signature,
        "Content-Type": "application/json",
    }


def encode(event: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return json.dumps(event).encode()


def post_event(
    client: Any, event: dict[str, Any] | str | bytes, msg_id: str | None = None, **sign_kw: Any
) -> Any:
    """Sign and POST to a Flask test client, or to a base URL string with requests."""
    body = encode(event)
    headers = sign(body, msg_id, **sign_kw)
    if isinstance(client, str):
        return requests.post(f"{client}/webhooks/clerk", data=body, headers=headers, timeout=10)
    return client.post("/webhooks/clerk", data=body, headers=headers)
