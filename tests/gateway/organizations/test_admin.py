"""GET /admin/organizations/<org_id> (CONTRACT 4.6)."""

from __future__ import annotations

from gateway.extensions import db
from gateway.organizations.service import apply_event
from tests.support.organizations import T0, membership_event, new_org_id, org_event
from tests.support.svix import new_user_id

KEY = "a" * 40
AUTH = {"Authorization": f"Bearer {KEY}"}


def seed(app, *events):
    with app.app_context():
        for event in events:
            apply_event(db.session, event)
            db.session.commit()


def test_admin_organization_shows_it_with_current_members(make_app):
    app = make_app(ADMIN_API_KEYS=KEY)
    org_id, alice, bob = new_org_id(), new_user_id(), new_user_id()
    seed(
        app,
        org_event("organization.created", org_id, T0, name="Acme", public_metadata={"tier": 2}),
        membership_event("organizationMembership.created", org_id, alice, "orgmem_a", "org:admin"),
        membership_event(
            "organizationMembership.created", org_id, bob, "orgmem_b", created_at=T0 + 1
        ),
        membership_event(
            "organizationMembership.deleted", org_id, bob, "orgmem_b", created_at=T0 + 1
        ),
    )

    response = app.test_client().get(f"/admin/organizations/{org_id}", headers=AUTH)

    assert response.status_code == 200
    org = response.get_json()["organization"]
    assert {k: org[k] for k in ("id", "name", "slug", "is_active", "members")} == {
        "id": org_id,
        "name": "Acme",
        "slug": f"slug-{org_id}",
        "is_active": True,
        "members": [{"clerk_user_id": alice, "role": "org:admin"}],
    }
    assert org["public_metadata"] == {"tier": 2}
    assert org["deleted_at"] is None
    assert org["clerk_updated_at"] == "2023-11-14T22:13:20Z"


def test_admin_organization_tombstone_is_inactive(make_app):
    app = make_app(ADMIN_API_KEYS=KEY)
    org_id = new_org_id()
    seed(app, org_event("organization.deleted", org_id))

    org = app.test_client().get(f"/admin/organizations/{org_id}", headers=AUTH).get_json()

    assert org["organization"]["is_active"] is False
    assert org["organization"]["name"] is None


def test_admin_organization_unknown_is_404_organization_not_found(make_app):
    response = (
        make_app(ADMIN_API_KEYS=KEY)
        .test_client()
        .get("/admin/organizations/org_nobody", headers=AUTH)
    )

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "organization_not_found"


def test_admin_organization_needs_the_admin_key(make_app):
    client = make_app(ADMIN_API_KEYS=KEY).test_client()

    assert client.get("/admin/organizations/org_1").status_code == 401
    wrong = client.get("/admin/organizations/org_1", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.get_json()["code"] == "admin_key_invalid"


def test_admin_organization_without_admin_keys_does_not_exist(make_app):
    assert make_app().test_client().get("/admin/organizations/org_1").status_code == 404
