"""`flask dev webhook` sends organization and membership events in Clerk's shapes."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway.extensions import db
from gateway.models import WebhookEvent
from gateway.organizations.service import find_organization, organization_members
from gateway.webhooks.processing import drain
from tests.support.processes import free_port


@pytest.fixture
def dev_gateway(make_app):
    app = make_app(GATEWAY_ENV="development")
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/webhooks/clerk"
    server.shutdown()


def send(app, url, *args):
    return app.test_cli_runner().invoke(args=["dev", "webhook", *args, "--url", url])


def test_dev_webhook_organization_and_membership_events_apply(dev_gateway):
    app, url = dev_gateway
    results = [
        send(app, url, "organization.created", "--org", "org_dev", "--org-name", "Dev Inc"),
        send(app, url, "organizationMembership.created", "--org", "org_dev",
             "--user", "user_dev", "--role", "org:admin"),
        send(app, url, "organizationMembership.updated", "--org", "org_dev",
             "--user", "user_dev", "--role", "org:member"),
        send(app, url, "organizationMembership.created", "--org", "org_dev", "--user", "user_2"),
        send(app, url, "organizationMembership.deleted", "--org", "org_dev", "--user", "user_2"),
    ]  # fmt: skip
    for result in results:
        assert result.exit_code == 0, result.output
        assert "HTTP 200" in result.output

    with app.app_context():
        events = db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        assert [e.ordering_key for e in events] == ["org_dev"] * 5
        drain(db.session, app.config["GATEWAY"], lambda jobs: None)
        db.session.expire_all()
        assert [e.status for e in events] == ["processed"] * 5
        org = find_organization(db.session, "org_dev")
        view = org.to_admin_dict(organization_members(db.session, org))
    assert (view["name"], view["slug"], view["is_active"]) == ("Dev Inc", "dev", True)
    # updated_at has millisecond resolution: the role change may share the created's instant,
    # then it is (correctly) stale; either way user_dev is the one member left.
    assert [m["clerk_user_id"] for m in view["members"]] == ["user_dev"]


def test_dev_webhook_organization_deleted_is_the_deleted_object_form(dev_gateway):
    app, url = dev_gateway

    result = send(app, url, "organization.deleted", "--org", "org_gone")

    assert result.exit_code == 0, result.output
    with app.app_context():
        event = db.session.scalar(select(WebhookEvent))
        assert event.payload["data"] == {
            "deleted": True,
            "id": "org_gone",
            "object": "organization",
        }


@pytest.mark.parametrize(
    "args",
    [
        ("organization.created",),  # no --org
        ("organizationMembership.created", "--org", "org_1"),  # no --user
        ("user.created", "--email", "a@example.com"),  # no --user
    ],
)
def test_dev_webhook_missing_ids_fail(dev_gateway, args):
    app, url = dev_gateway

    result = send(app, url, *args)

    assert result.exit_code != 0
