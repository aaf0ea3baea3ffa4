"""gateway.organizations.service on PostgreSQL: every order of Clerk's events ends the same."""

from __future__ import annotations

from itertools import permutations
from typing import Any

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Organization, OrganizationMembership, WebhookEvent
from gateway.organizations.service import (
    APPLIERS,
    EVENT_TYPES,
    InvalidPayload,
    apply_event,
    find_organization,
    organization_members,
)
from gateway.webhooks.handlers import HANDLERS
from gateway.webhooks.processing import drain
from gateway.webhooks.service import record_webhook_event
from tests.support.organizations import T0, membership_event, new_org_id, org_event
from tests.support.svix import encode, new_msg_id, new_user_id


def apply_in_order(app, events: list[dict[str, Any]]) -> list[str | None]:
    """Each event in its own transaction, as the worker applies them."""
    skipped = []
    with app.app_context():
        for event in events:
            skipped.append(apply_event(db.session, event).skipped)
            db.session.commit()
    return skipped


def organization(app, org_id: str) -> dict[str, Any] | None:
    with app.app_context():
        org = find_organization(db.session, org_id)
        if org is None:
            return None
        return org.to_admin_dict(organization_members(db.session, org))


def all_orders(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [list(order) for order in permutations(events)]


def test_every_organization_and_membership_type_has_an_applier_and_is_handled() -> None:
    assert set(APPLIERS) == EVENT_TYPES
    assert set(HANDLERS) >= EVENT_TYPES
    assert {
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organizationMembership.created",
        "organizationMembership.updated",
        "organizationMembership.deleted",
    } == EVENT_TYPES


def test_organization_created_mirrors_clerk_sample(app) -> None:
    org_id = new_org_id()
    apply_in_order(
        app, [org_event("organization.created", org_id, public_metadata={"plan": "team"})]
    )

    with app.app_context():
        org = db.session.scalar(select(Organization).where(Organization.clerk_org_id == org_id))
        assert (org.name, org.slug, org.is_active, org.deleted_at) == (
            "Acme Inc",
            f"slug-{org_id}",
            True,
            None,
        )
        assert org.public_metadata == {"plan": "team"}
        assert round(org.clerk_created_at.timestamp() * 1000) == T0
        assert round(org.clerk_updated_at.timestamp() * 1000) == T0


@pytest.mark.parametrize("order", [0, 1])
def test_organization_created_and_updated_in_either_order_end_updated(app, order) -> None:
    org_id = new_org_id()
    events = [
        org_event("organization.created", org_id, T0, name="Acme"),
        org_event("organization.updated", org_id, T0 + 1000, name="Acme Renamed"),
    ]
    skipped = apply_in_order(app, all_orders(events)[order])

    assert organization(app, org_id)["name"] == "Acme Renamed"
    assert skipped == ([None, None] if order == 0 else [None, "stale"])


def test_organization_lifecycle_in_every_order_ends_deleted_and_stays_deleted(app) -> None:
    for order in all_orders(
        [
            org_event("organization.created", "org_x", T0, name="Acme"),
            org_event("organization.updated", "org_x", T0 + 1000, name="Acme Renamed"),
            org_event("organization.deleted", "org_x"),
        ]
    ):
        org_id = new_org_id()
        for event in order:
            event["data"]["id"] = org_id
        apply_in_order(app, order)

        org = organization(app, org_id)
        assert org["is_active"] is False and org["deleted_at"] is not None, order
        # A late event (a Svix retry, a replay) never brings it back.
        late = org_event("organization.updated", org_id, T0 + 5000, name="Revived")
        assert apply_in_order(app, [late]) == ["deleted"]
        assert organization(app, org_id)["is_active"] is False


def test_organization_deleted_unknown_leaves_a_tombstone(app) -> None:
    org_id = new_org_id()
    apply_in_order(app, [org_event("organization.deleted", org_id)])

    org = organization(app, org_id)
    assert org["is_active"] is False and org["name"] is None and org["members"] == []
    assert apply_in_order(app, [org_event("organization.created", org_id)]) == ["deleted"]


def test_membership_lifecycle_in_every_order_ends_removed(app) -> None:
    user_id = new_user_id()
    events = [
        ("organizationMembership.created", "org:member", T0),
        ("organizationMembership.updated", "org:admin", T0 + 1000),
        ("organizationMembership.deleted", "org:admin", T0 + 1000),
    ]
    for order in permutations(events):
        org_id = new_org_id()
        apply_in_order(
            app,
            [
                membership_event(kind, org_id, user_id, "orgmem_a", role, updated_at=updated)
                for kind, role, updated in order
            ],
        )

        org = organization(app, org_id)
        assert org is not None and org["is_active"] is True, order
        assert org["members"] == [], order


@pytest.mark.parametrize("order", [0, 1])
def test_membership_created_and_updated_in_either_order_end_updated(app, order) -> None:
    org_id, user_id = new_org_id(), new_user_id()
    events = [
        membership_event("organizationMembership.created", org_id, user_id, role="org:member"),
        membership_event(
            "organizationMembership.updated", org_id, user_id, role="org:admin", updated_at=T0 + 1
        ),
    ]
    apply_in_order(app, all_orders(events)[order])

    assert organization(app, org_id)["members"] == [{"clerk_user_id": user_id, "role": "org:admin"}]


def test_membership_reinvited_user_in_every_order_is_a_member_again(app) -> None:
    # orgmem_old: invited, then removed; orgmem_new: invited again later (Clerk: a new id).
    user_id = new_user_id()
    events = [
        ("organizationMembership.created", "orgmem_old", "org:member", T0),
        ("organizationMembership.deleted", "orgmem_old", "org:member", T0),
        ("organizationMembership.created", "orgmem_new", "org:admin", T0 + 60_000),
    ]
    for order in permutations(events):
        org_id = new_org_id()
        apply_in_order(
            app,
            [
                membership_event(kind, org_id, user_id, mem_id, role, created_at=created)
                for kind, mem_id, role, created in order
            ],
        )

        assert organization(app, org_id)["members"] == [
            {"clerk_user_id": user_id, "role": "org:admin"}
        ], order
        with app.app_context():
            row = db.session.scalar(
                select(OrganizationMembership).where(
                    OrganizationMembership.clerk_user_id == user_id,
                    OrganizationMembership.organization_id.in_(
                        select(Organization.id).where(Organization.clerk_org_id == org_id)
                    ),
                )
            )
            assert row.clerk_membership_id == "orgmem_new"


def test_membership_removed_then_its_late_events_never_resurrect_it(app) -> None:
    org_id, user_id = new_org_id(), new_user_id()
    apply_in_order(
        app,
        [
            membership_event("organizationMembership.created", org_id, user_id, "orgmem_a"),
            membership_event("organizationMembership.deleted", org_id, user_id, "orgmem_a"),
        ],
    )
    late = [
        membership_event("organizationMembership.created", org_id, user_id, "orgmem_a"),
        membership_event(
            "organizationMembership.updated", org_id, user_id, "orgmem_a", updated_at=T0 + 9
        ),
    ]
    assert apply_in_order(app, late) == ["removed", "removed"]
    assert organization(app, org_id)["members"] == []


def test_membership_before_its_organization_creates_it_from_the_embedded_object(app) -> None:
    org_id, user_id = new_org_id(), new_user_id()
    skipped = apply_in_order(
        app,
        [
            membership_event("organizationMembership.created", org_id, user_id, role="org:admin"),
            org_event("organization.created", org_id, T0),
        ],
    )

    org = organization(app, org_id)
    assert skipped == [None, "stale"]  # the organization.created says what the membership did
    assert (org["name"], org["is_active"]) == ("Acme Inc", True)
    assert org["members"] == [{"clerk_user_id": user_id, "role": "org:admin"}]


def test_organization_and_membership_events_in_every_order_end_deleted_without_members(app):
    user_id = new_user_id()
    for order in all_orders(
        [
            org_event("organization.created", "org_x"),
            membership_event("organizationMembership.created", "org_x", user_id),
            org_event("organization.deleted", "org_x"),
        ]
    ):
        org_id = new_org_id()
        for event in order:
            data = event["data"]
            (data.get("organization", data))["id"] = org_id
        apply_in_order(app, order)

        org = organization(app, org_id)
        assert org["is_active"] is False and org["members"] == [], order


def test_organization_deleted_removes_its_members(app) -> None:
    org_id = new_org_id()
    users = [new_user_id(), new_user_id()]
    apply_in_order(
        app,
        [
            membership_event("organizationMembership.created", org_id, user, f"orgmem_{n}")
            for n, user in enumerate(users)
        ],
    )
    assert len(organization(app, org_id)["members"]) == 2

    apply_in_order(app, [org_event("organization.deleted", org_id)])

    assert organization(app, org_id)["members"] == []


def test_membership_updated_embedded_newer_organization_updates_it(app) -> None:
    org_id, user_id = new_org_id(), new_user_id()
    newer = membership_event(
        "organizationMembership.updated", org_id, user_id, org_updated_at=T0 + 5
    )
    newer["data"]["organization"]["name"] = "Acme Newer"
    apply_in_order(app, [org_event("organization.created", org_id, T0), newer])

    assert organization(app, org_id)["name"] == "Acme Newer"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "organization.created", "data": {"name": "no id"}}, "no_organization_id"),
        ({"type": "organization.updated", "data": {"id": "user_1"}}, "no_organization_id"),
        ({"type": "organization.deleted", "data": {"deleted": True}}, "no_organization_id"),
        ({"type": "organization.created", "data": ["x"]}, "not_an_organization"),
        ({"type": "organizationMembership.created", "data": {"id": "orgmem_1"}}, None),
    ],
)
def test_apply_event_not_the_promised_object_is_invalid(app, event, reason) -> None:
    with app.app_context(), pytest.raises(InvalidPayload) as excinfo:
        apply_event(db.session, event)
    if reason:
        assert excinfo.value.reason == reason


@pytest.mark.parametrize(
    "data",
    [{"name": "N" * 256}, {"slug": "s" * 300}, {"name": "nul\x00"}, {"name": "lone \ud800"}],
    ids=["name_256", "slug_300", "nul", "lone_surrogate"],
)
def test_apply_event_unstorable_text_is_invalid_never_a_database_error(app, data) -> None:
    event = org_event("organization.created", new_org_id(), **data)
    with app.app_context(), pytest.raises(InvalidPayload) as excinfo:
        apply_event(db.session, event)
    assert excinfo.value.reason == "field_not_storable"


def test_drain_organization_events_are_processed_invalid_or_keyless(app) -> None:
    org_id = new_org_id()
    good = org_event("organization.created", org_id)
    no_member = membership_event("organizationMembership.created", org_id, new_user_id())
    del no_member["data"]["public_user_data"]
    no_org = membership_event("organizationMembership.created", org_id, new_user_id())
    del no_org["data"]["organization"]["id"]
    with app.app_context():
        recorded = [
            record_webhook_event(db.session, new_msg_id(), encode(e))
            for e in (good, no_member, no_org)
        ]
        drain(db.session, app.config["GATEWAY"], lambda jobs: None)
        rows = [db.session.get(WebhookEvent, r.id) for r in recorded]
        # Keyed by the organization: the membership's key is the organization it embeds.
        assert [r.ordering_key for r in rows] == [org_id, org_id, None]
        assert [(r.status, r.last_error) for r in rows] == [
            ("processed", None),
            ("invalid", "no_membership_user"),
            ("invalid", "no_organization_id"),  # refused at receipt: nothing to order it by
        ]
    assert organization(app, org_id)["name"] == "Acme Inc"


def test_two_members_lifecycles_interleaved_in_all_120_orders(app) -> None:
    alice, bob = new_user_id(), new_user_id()
    events = [
        ("organizationMembership.created", alice, "orgmem_a", "org:member", T0, T0),
        ("organizationMembership.updated", alice, "orgmem_a", "org:admin", T0, T0 + 1000),
        ("organizationMembership.created", bob, "orgmem_b1", "org:member", T0, T0),
        ("organizationMembership.deleted", bob, "orgmem_b1", "org:member", T0, T0),
        (
            "organizationMembership.created",
            bob,
            "orgmem_b2",
            "org:billing",
            T0 + 60_000,
            T0 + 60_000,
        ),
    ]
    orders = list(permutations(events))
    assert len(orders) == 120
    for order in orders:
        org_id = new_org_id()
        apply_in_order(
            app,
            [
                membership_event(kind, org_id, user, mem_id, role, created_at=c, updated_at=u)
                for kind, user, mem_id, role, c, u in order
            ],
        )

        members = organization(app, org_id)["members"]
        assert sorted(members, key=lambda m: m["role"]) == [
            {"clerk_user_id": alice, "role": "org:admin"},
            {"clerk_user_id": bob, "role": "org:billing"},
        ], order
