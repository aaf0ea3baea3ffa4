"""`flask webhooks list|replay|requeue`, `flask users show`, `flask dev webhook`."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime

import click
from flask import current_app
from svix.webhooks import Webhook

from gateway.cli import CommandFailed, Progress, dev, send_dev_event, users, webhooks
from gateway.errors import Problem
from gateway.extensions import db
from gateway.jobs import APPLY_WEBHOOK_EVENTS, enqueue
from gateway.models import EventStatus
from gateway.models.base import isoformat
from gateway.organizations.service import EVENT_TYPES as ORGANIZATION_EVENT_TYPES
from gateway.users.service import find_by_clerk_id
from gateway.webhooks.bulk_replay import MAX_PER_CALL, parse_replay_filter, replay_in_bulk
from gateway.webhooks.handoff import publish_event
from gateway.webhooks.operations import list_events, parse_list_filters, prepare_replay
from gateway.webhooks.signatures import webhook_secrets
from gateway.webhooks.sweep import sweep_now

# What `flask dev webhook` can send: every Clerk type the worker applies.
DEV_EVENT_TYPES = frozenset({"user.created", "user.updated", "user.deleted"}) | (
    ORGANIZATION_EVENT_TYPES
)


@webhooks.command("list")
@click.option("--status", help="received, queued, processing, processed, ignored, invalid, failed")
@click.option("--type", "event_type", help="e.g. user.updated")
@click.option("--limit", default="50", show_default=True)
def list_command(status: str | None, event_type: str | None, limit: str) -> None:
    """The newest webhook events, one per line."""
    try:
        status, event_type, number = parse_list_filters(status, event_type, limit)
    except Problem as problem:
        raise CommandFailed.from_problem(problem) from None
    events = list_events(db.session(), status=status, event_type=event_type, limit=number)
    for event in events:
        click.echo(
            f"{isoformat(event.received_at)}  {event.svix_id}  {event.type or '-'}  "
            f"{event.clerk_user_id or '-'}  {event.status}  attempts={event.attempts}"
            + (f"  error={event.last_error}" if event.last_error else "")
        )
    click.echo(f"{len(events)} event(s)")


@webhooks.command("replay")
@click.argument("svix_id", required=False)
@click.option("--status", help="bulk: every event with this status (failed or processed)")
@click.option("--type", "event_type", help="bulk: only this type, e.g. user.updated")
@click.option("--since", help="bulk: only events received since (ISO 8601 with a zone)")
@click.option(
    "--limit", type=int, default=MAX_PER_CALL, show_default=True, help="bulk: at most this many"
)
def replay_command(
    svix_id: str | None, status: str | None, event_type: str | None, since: str | None, limit: int
) -> None:
    """Queue one event again, or every event of a status (what is already applied stays)."""
    if (svix_id is None) == (status is None):
        raise click.UsageError("give either SVIX_ID or --status (e.g. --status failed)")
    if status is not None:
        _replay_bulk(status, event_type, since, limit)
        return
    assert svix_id is not None
    try:
        event = prepare_replay(db.session(), svix_id)
    except Problem as problem:
        raise CommandFailed.from_problem(problem) from None
    if event.status != EventStatus.RECEIVED:
        click.echo(f"{svix_id}: {event.status}, nothing a worker can do with it")
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not publish_event(app, event.id):
        raise CommandFailed(f"{svix_id}: broker unavailable; the sweep will queue it")
    click.echo(f"{svix_id}: queued")


def _replay_bulk(status: str, event_type: str | None, since: str | None, limit: int) -> None:
    try:
        what = parse_replay_filter(status, event_type, since, limit)
    except Problem as problem:
        raise CommandFailed.from_problem(problem) from None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with Progress("replay") as progress:
        result = replay_in_bulk(
            db.session(),
            what,
            lambda: enqueue(app, APPLY_WEBHOOK_EVENTS),
            progress=progress.advance,
        )
    click.echo(result.summary())
    if result.queued and not result.woken:
        raise CommandFailed("the broker did not take the wake-up; the sweep will send one")


@webhooks.command("requeue")
@click.option(
    "--older-than", type=float, default=None, help="seconds (default WEBHOOK_SWEEP_SECONDS)"
)
@click.option(
    "--claim-ttl",
    type=float,
    default=None,
    help="seconds after which a claim or a queued message counts as lost (default 300)",
)
def requeue_command(older_than: float | None, claim_ttl: float | None) -> None:
    """Run the periodic sweep now."""
    result = sweep_now(current_app._get_current_object(), older_than, claim_ttl)  # type: ignore[attr-defined]
    click.echo(
        f"{result.found} waiting ({result.reclaimed} from dead workers), {result.enqueued} queued"
    )
    if result.enqueued < result.found:
        raise CommandFailed("broker unavailable; the rest waits for the next sweep")


@users.command("show")
@click.argument("clerk_user_id")
def show_user_command(clerk_user_id: str) -> None:
    """One user as mirrored from Clerk (the admin view)."""
    user = find_by_clerk_id(db.session(), clerk_user_id)
    if user is None:
        raise CommandFailed(f"user_not_found: {clerk_user_id}")
    click.echo(json.dumps(user.to_admin_dict(), indent=2))


@dev.command("webhook")
@click.argument("event_type", type=click.Choice(sorted(DEV_EVENT_TYPES)))
@click.option(
    "--user",
    "user_id",
    default=None,
    help="Clerk user id, e.g. user_123 (user and membership events)",
)
@click.option("--email", default=None, help="primary email (user.created/updated)")
@click.option("--first-name", default=None)
@click.option("--last-name", default=None)
@click.option(
    "--org",
    "org_id",
    default=None,
    help="Clerk organization id, e.g. org_acme (organization and membership events)",
)
@click.option("--org-name", default=None, help="organization name (default: the id)")
@click.option("--role", default="org:member", show_default=True, help="membership role")
@click.option("--url", default=None, help="default http://127.0.0.1:$PORT/webhooks/clerk")
def dev_webhook_command(
    event_type: str,
    user_id: str | None,
    email: str | None,
    first_name: str | None,
    last_name: str | None,
    org_id: str | None,
    org_name: str | None,
    role: str,
    url: str | None,
) -> None:
    """Send a Svix-signed Clerk event to the running local gateway (development mode only)."""
    config = current_app.config["GATEWAY"]
    if not config.dev_mode:
        raise CommandFailed("development mode only (GATEWAY_ENV=development, no Clerk keys)")
    now_ms = int(time.time() * 1000)
    if event_type.startswith("user."):
        if not user_id:
            raise CommandFailed("--user is required for user events")
        data = _dev_user_data(event_type, user_id, email, first_name, last_name, now_ms)
    else:
        if not org_id or (event_type.startswith("organizationMembership.") and not user_id):
            raise CommandFailed("--org (and --user for membership events) is required")
        data = _dev_organization_data(event_type, org_id, org_name, user_id, role, now_ms)
    body = json.dumps({"data": data, "object": "event", "type": event_type, "timestamp": now_ms})
    msg_id = f"msg_dev_{uuid.uuid4().hex}"
    # One moment for the header and the signature: read twice, a second boundary between the two
    # reads made the signature cover another timestamp than the header (a 400 now and then).
    signed_at = datetime.fromtimestamp(int(time.time()), UTC)
    signature = Webhook(webhook_secrets(config)[0]).sign(msg_id, signed_at, body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(signed_at.timestamp())),
        "svix-signature": signature,
        "Content-Type": "application/json",
    }
    target = url or f"http://127.0.0.1:{config.port}/webhooks/clerk"
    send_dev_event(f"{event_type} {msg_id}", target, body, headers)


DEV_EVENT_TYPES = (
    frozenset({"user.created", "user.updated", "user.deleted"}) | ORGANIZATION_EVENT_TYPES
)


def _dev_user_data(
    event_type: str,
    user_id: str,
    email: str | None,
    first_name: str | None,
    last_name: str | None,
    now_ms: int,
) -> dict[str, object]:
    data: dict[str, object] = {"id": user_id, "object": "user"}
    if event_type == "user.deleted":
        return data | {"deleted": True}
    if not email:
        raise CommandFailed("--email is required for user.created/user.updated")
    return data | {
        "email_addresses": [
            {
                "id": "idn_dev",
                "email_address": email,
                "object": "email_address",
                "verification": {"status": "verified", "strategy": "email_code"},
            }
        ],
        "primary_email_address_id": "idn_dev",
        "first_name": first_name,
        "last_name": last_name,
        "image_url": None,
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "created_at": now_ms,
        "updated_at": now_ms,
    }


def _dev_organization_data(
    event_type: str,
    org_id: str,
    org_name: str | None,
    user_id: str | None,
    role: str,
    now_ms: int,
) -> dict[str, object]:
    """OrganizationJSON, the deleted-object form, or OrganizationMembershipJSON, as Clerk sends."""
    if event_type == "organization.deleted":
        return {"deleted": True, "id": org_id, "object": "organization"}
    organization: dict[str, object] = {
        "object": "organization",
        "id": org_id,
        "name": org_name or org_id,
        "slug": org_id.removeprefix("org_").replace("_", "-"),
        "image_url": None,
        "has_image": False,
        "public_metadata": {},
        "created_at": now_ms,
        "updated_at": now_ms,
    }
    if event_type.startswith("organization."):
        return organization
    # One membership id per pair, so created, updated and deleted name the same membership.
    digest = hashlib.sha256(f"{org_id}/{user_id}".encode()).hexdigest()[:20]
    return {
        "object": "organization_membership",
        "id": f"orgmem_dev_{digest}",
        # This command does not know the organization's state: an embedded copy dated at the
        # epoch creates it when missing and never overwrites what organization.* events set.
        "organization": organization | {"created_at": 0, "updated_at": 0},
        "public_user_data": {"user_id": user_id, "identifier": user_id, "first_name": None},
        "public_metadata": {},
        "role": role,
        "permissions": [],
        "created_at": now_ms,
        "updated_at": now_ms,
    }
