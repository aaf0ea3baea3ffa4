"""GET /openapi.json: every route and every problem code, generated from the app."""

from __future__ import annotations

import importlib
import pkgutil

import gateway
from gateway.errors import HttpErrorProblem, Problem
from gateway.problems import BY_CODE, PROBLEMS


def test_openapi_lists_every_route_and_problem_code(make_app):
    app = make_app(ADMIN_API_KEYS="openapi-test-admin-key-" + "x" * 16)

    response = app.test_client().get("/openapi.json")

    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for path, method in [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/guards/process", "post"),
        ("/api/v1/guards", "get"),
        ("/webhooks/clerk", "post"),
        ("/webhooks/clerk/users/{clerk_user_id}", "get"),
        ("/webhooks/clerk/users/email/{email}", "get"),
        ("/admin/webhook-events", "get"),
        ("/admin/webhook-events/{svix_id}/replay", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ]:
        assert method in paths.get(path, {}), (path, method)
    assert paths["/api/v1/auth/login"]["post"]["security"] == [{"clerkSession": []}]
    assert paths["/admin/webhook-events"]["get"]["security"] == [{"adminKey": []}]
    assert "security" not in paths["/webhooks/clerk"]["post"]
    codes = document["x-problem-codes"]
    for code in [
        "token_missing", "token_expired", "jwk_remote_failed_to_load", "clerk_disabled",
        "user_not_found", "guard_timeout", "biasguard_denied", "webhook_signature_invalid",
        "payload_too_large", "admin_key_invalid", "internal_error",
    ]:  # fmt: skip
        assert codes[code]["status"] == BY_CODE[code].status
    enum = document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
    assert set(enum) == set(codes)


def test_problem_list_names_every_problem_class_once():
    # Whatever is imported, the list is the same: every module of the package is loaded here,
    # and every Problem subclass with its own code must be in gateway.problems.PROBLEMS.
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        importlib.import_module(module.name)

    def subclasses(cls: type[Problem]) -> set[type[Problem]]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(sub) for sub in found))

    coded = {cls for cls in subclasses(Problem) if "code" in cls.__dict__}
    assert coded - set(PROBLEMS) == set()
    assert len(BY_CODE) == len(PROBLEMS)  # no code used twice
    assert HttpErrorProblem not in PROBLEMS  # its code is werkzeug's, per status
