"""gateway.auth.claims: version 1 and 2 session claims normalised as Clerk's SDKs read them.

Expected values follow @clerk/shared jwtPayloadParser
(`__experimental_JWTPayloadToAuthObjectProperties`, `splitByScope`,
`parsePermissions`/`decimalToBinaryBits`, `buildOrgPermissions`) and authorization
(`checkOrgAuthorization`, `prefixWithOrg`).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.claims import (
    MalformedClaims,
    Organization,
    SessionClaims,
    normalise_session_claims,
    org_features,
    org_permissions,
    prefix_with_org,
)

BASE = {"sub": "user_1", "sid": "sess_1", "iss": "https://clerk.test", "exp": 2, "iat": 1}
ACME_PERMISSIONS = (
    "org:billing:read",
    "org:billing:manage",
    "org:reports:read",
)


def v1(**claims: Any) -> dict[str, Any]:
    return BASE | claims


def v2(**claims: Any) -> dict[str, Any]:
    return BASE | {"v": 2} | claims


# The same session, as a version 1 and a version 2 token carry it.
ACME_V1 = v1(
    org_id="org_acme",
    org_slug="acme",
    org_role="org:admin",
    org_permissions=list(ACME_PERMISSIONS),
)
ACME_V2 = v2(
    # features: billing (org), dashboard (user only), reports (org and user)
    fea="o:billing,u:dashboard,ou:reports",
    # per: read = bit 0, manage = bit 1; billing has both (3), reports read only (1)
    o={"id": "org_acme", "slg": "acme", "rol": "admin", "per": "read,manage", "fpm": "3,1"},
)


def test_normalise_v1_and_v2_of_one_session_are_identical() -> None:
    expected = SessionClaims(
        user_id="user_1",
        session_id="sess_1",
        org=Organization("org_acme", "acme", "org:admin", ACME_PERMISSIONS),
        actor_id=None,
        version=1,
    )

    assert normalise_session_claims(ACME_V1) == expected
    assert normalise_session_claims(ACME_V2) == SessionClaims(**{**expected.__dict__, "version": 2})
    assert (
        normalise_session_claims(ACME_V1).to_public_dict()
        == normalise_session_claims(ACME_V2).to_public_dict()
    )


def test_normalise_v2_ignores_forged_flat_org_claims() -> None:
    forged = ACME_V2 | {
        "org_id": "org_victim",
        "org_slug": "victim",
        "org_role": "org:owner",
        "org_permissions": ["org:sys_memberships:manage"],
    }

    assert normalise_session_claims(forged) == normalise_session_claims(ACME_V2)


def test_normalise_v2_flat_org_claims_without_o_give_no_organization() -> None:
    claims = v2(org_id="org_victim", org_role="org:admin", org_permissions=["org:a:b"])

    assert normalise_session_claims(claims).org is None


def test_normalise_v1_ignores_o_claim() -> None:
    claims = v1(o={"id": "org_x", "rol": "admin", "per": "read", "fpm": "1"}, fea="o:billing")

    assert normalise_session_claims(claims).org is None


@pytest.mark.parametrize("version", [None, 1, "2", 3, 2.5])
def test_normalise_anything_but_v2_reads_flat_claims(version: Any) -> None:
    claims = ACME_V1 | ({"v": version} if version is not None else {})

    session = normalise_session_claims(claims)

    assert session.org == Organization("org_acme", "acme", "org:admin", ACME_PERMISSIONS)
    assert session.version == 1


def test_normalise_v2_without_fea_has_role_but_no_permissions() -> None:
    claims = v2(o={"id": "org_1", "slg": "one", "rol": "member", "per": "read", "fpm": "1"})

    assert normalise_session_claims(claims).org == Organization("org_1", "one", "org:member", ())


@pytest.mark.parametrize(
    "o",
    [
        {"id": "org_1", "rol": "member", "per": "read"},  # no fpm
        {"id": "org_1", "rol": "member", "fpm": "1"},  # no per
        {"id": "org_1", "rol": "member", "per": "", "fpm": "1"},
        {"id": "org_1", "rol": "member", "per": "read", "fpm": ""},
    ],
)
def test_normalise_v2_without_per_or_fpm_has_no_permissions(o: dict[str, Any]) -> None:
    session = normalise_session_claims(v2(fea="o:billing", o=o))

    assert session.org is not None
    assert session.org.permissions == ()


def test_normalise_v2_without_rol_has_no_role() -> None:
    session = normalise_session_claims(v2(o={"id": "org_1", "slg": "one"}))

    assert session.org == Organization("org_1", "one", None, ())


def test_normalise_v2_o_without_id_is_no_organization() -> None:
    assert normalise_session_claims(v2(o={"rol": "admin", "per": "a", "fpm": "1"})).org is None
    assert normalise_session_claims(v2(o="org_1")).org is None


def test_normalise_actor_from_act_sub_in_both_versions() -> None:
    act = {"sub": "user_support", "iss": "https://dashboard.clerk.com", "sid": "sess_support"}

    assert normalise_session_claims(v1(act=act)).actor_id == "user_support"
    assert normalise_session_claims(v2(act=act)).actor_id == "user_support"
    assert normalise_session_claims(v2(act="user_support")).actor_id is None
    assert normalise_session_claims(v2()).actor_id is None


def test_normalise_impersonated_v1_and_v2_sessions_are_identical() -> None:
    act = {"sub": "user_support"}
    one = normalise_session_claims(ACME_V1 | {"act": act}).to_public_dict()

    assert one == normalise_session_claims(ACME_V2 | {"act": act}).to_public_dict()
    assert one["actor"] == {"sub": "user_support"}


def test_to_public_dict_is_the_me_shape() -> None:
    assert normalise_session_claims(ACME_V2 | {"act": {"sub": "user_op"}}).to_public_dict() == {
        "user_id": "user_1",
        "session_id": "sess_1",
        "org": {
            "id": "org_acme",
            "slug": "acme",
            "role": "org:admin",
            "permissions": list(ACME_PERMISSIONS),
        },
        "actor": {"sub": "user_op"},
    }
    assert normalise_session_claims(v2()).to_public_dict() == {
        "user_id": "user_1",
        "session_id": "sess_1",
        "org": None,
        "actor": None,
    }


def test_normalise_v1_keeps_only_string_permissions() -> None:
    claims = v1(org_id="org_1", org_permissions=["org:a:b", 7, None, "org:c:d"])

    assert normalise_session_claims(claims).org == Organization(
        "org_1", None, None, ("org:a:b", "org:c:d")
    )
    assert normalise_session_claims(v1(org_id="org_1", org_permissions="org:a:b")).org == (
        Organization("org_1", None, None, ())
    )


# --- fea: splitByScope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fea", "expected"),
    [
        (None, []),
        ("", []),
        (7, []),
        ("o:a", ["a"]),
        ("u:a", []),
        ("o:a,u:b,o:c", ["a", "c"]),
        ("ou:a,uo:b", ["a", "b"]),
        (" o:a , o:b ", ["a", "b"]),
        ("x:a,o:b", ["b"]),
        ("o:a:b", ["a:b"]),  # everything after the first colon is the name
    ],
)
def test_org_features_follow_split_by_scope(fea: Any, expected: list[str]) -> None:
    assert org_features(fea) == expected


@pytest.mark.parametrize("fea", ["billing", "o:a,billing", "o:a,,o:b"])
def test_org_features_entry_without_scope_is_malformed(fea: str) -> None:
    # Clerk's splitByScope throws; skipping would shift fpm onto the wrong features.
    with pytest.raises(MalformedClaims):
        org_features(fea)


def test_normalise_v2_malformed_fea_raises() -> None:
    with pytest.raises(MalformedClaims):
        normalise_session_claims(ACME_V2 | {"fea": "billing,o:reports"})


# --- per/fpm: parsePermissions + buildOrgPermissions --------------------------------------------


@pytest.mark.parametrize(
    ("features", "per", "fpm", "expected"),
    [
        # bit i (least significant first) grants per[i]
        (["f"], "a,b,c", "1", ["org:f:a"]),
        (["f"], "a,b,c", "2", ["org:f:b"]),
        (["f"], "a,b,c", "4", ["org:f:c"]),
        (["f"], "a,b,c", "5", ["org:f:a", "org:f:c"]),
        (["f"], "a,b,c", "7", ["org:f:a", "org:f:b", "org:f:c"]),
        (["f"], "a,b,c", "0", []),
        # bits past the last permission name grant nothing
        (["f"], "a", "6", []),
        # one mask per feature, in order; extra masks or features are ignored
        (["f", "g"], "a,b", "1,2", ["org:f:a", "org:g:b"]),
        (["f", "g"], "a,b", "3", ["org:f:a", "org:f:b"]),
        (["f"], "a,b", "1,3", ["org:f:a"]),
        # entries are trimmed
        (["f"], " a , b ", " 3 ", ["org:f:a", "org:f:b"]),
        # a mask that is not plain decimal digits grants nothing for its feature only
        (["f", "g"], "a", "x,1", ["org:g:a"]),
        (["f", "g"], "a", "-1,1", ["org:g:a"]),
        (["f", "g"], "a", "1.0,1", ["org:g:a"]),
        (["f"], "a", "٣", []),  # non-ASCII digits are not digits to JavaScript
        (["f"], "a", "", []),
        # leading zeros are still decimal
        (["f"], "a,b", "002", ["org:f:b"]),
        # no features (no fea): nothing
        ([], "a", "1", []),
    ],
)
def test_org_permissions_decode_fpm_bitmasks(
    features: list[str], per: str, fpm: str, expected: list[str]
) -> None:
    assert list(org_permissions(features, per, fpm)) == expected


def test_org_permissions_masks_wider_than_53_bits_are_exact() -> None:
    # Clerk decodes fpm with decimal long division (decimalToBinaryBits), not a float.
    per = ",".join(f"p{i}" for i in range(70))
    mask = (1 << 69) | (1 << 64) | 1

    assert org_permissions(["f"], per, str(mask)) == ("org:f:p0", "org:f:p64", "org:f:p69")


@pytest.mark.parametrize(("per", "fpm"), [(None, "1"), ("a", None), (["a"], "1"), ("a", 1)])
def test_org_permissions_non_string_per_or_fpm_grant_nothing(per: Any, fpm: Any) -> None:
    assert org_permissions(["f"], per, fpm) == ()


def test_org_permissions_absurdly_long_mask_grants_nothing() -> None:
    assert org_permissions(["f"], "a", "1" * 500) == ()


# --- authorizes: checkOrgAuthorization --------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    [
        (None, None, True),
        ("org:admin", None, True),
        ("admin", None, True),  # prefixWithOrg on both sides
        ("org:org:admin", None, True),
        ("org:member", None, False),
        (None, "org:billing:manage", True),
        (None, "billing:manage", True),
        (None, "org:billing:delete", False),
        (None, "org:dashboard:read", False),  # a user feature grants no org permission
        ("org:admin", "org:billing:manage", True),
        ("org:member", "org:billing:manage", False),  # both must hold
        ("org:admin", "org:billing:delete", False),
    ],
)
def test_authorizes_follows_check_org_authorization(
    role: str | None, permission: str | None, allowed: bool
) -> None:
    session = normalise_session_claims(ACME_V2)

    assert session.authorizes(role=role, permission=permission) is allowed
    assert normalise_session_claims(ACME_V1).authorizes(role=role, permission=permission) is allowed


def test_authorizes_without_organization_denies_every_org_check() -> None:
    session = normalise_session_claims(v2())

    assert session.authorizes() is True
    assert session.authorizes(role="org:admin") is False
    assert session.authorizes(permission="org:billing:read") is False


def test_authorizes_role_without_session_role_is_denied() -> None:
    session = normalise_session_claims(v2(o={"id": "org_1", "per": "a", "fpm": "1"}, fea="o:f"))

    assert session.authorizes(permission="org:f:a") is True
    assert session.authorizes(role="org:admin") is False


@pytest.mark.parametrize(
    ("name", "expected"),
    [("admin", "org:admin"), ("org:admin", "org:admin"), ("org:org:a", "org:a"), ("", "org:")],
)
def test_prefix_with_org(name: str, expected: str) -> None:
    assert prefix_with_org(name) == expected


def test_normalise_non_string_ids_are_absent() -> None:
    session = normalise_session_claims({"sub": "user_1", "sid": 5, "v": 2, "o": {"id": 9}})

    assert session.session_id is None
    assert session.org is None
