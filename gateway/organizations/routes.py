"""GET /admin/organizations/<org_id> (CONTRACT 4.6): an organization as mirrored, with members."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from gateway.extensions import db
from gateway.organizations.service import (
    OrganizationNotFound,
    find_organization,
    organization_members,
)
from gateway.webhooks.admin import admin_only

bp = Blueprint("organizations_admin", __name__)


@bp.get("/admin/organizations/<org_id>")
@admin_only
def show_organization(org_id: str) -> Response:
    """One organization as mirrored from Clerk, with its current members."""
    session = db.session()
    org = find_organization(session, org_id)
    if org is None:
        raise OrganizationNotFound()
    return jsonify(organization=org.to_admin_dict(organization_members(session, org)))
