"""GET /openapi.json: the OpenAPI 3.1 document, built from the app's routes and Problem codes."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from gateway.auth.public import is_public, public
from gateway.errors import PROBLEM_CONTENT_TYPE
from gateway.problems import PROBLEMS

bp = Blueprint("openapi", __name__)
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@bp.get("/openapi.json")
@public
def openapi_document() -> ResponseReturnValue:
    return jsonify(build_document(current_app._get_current_object()))  # type: ignore[attr-defined]


def build_document(app: Flask) -> dict[str, Any]:
    """Generated, so it cannot drift from the routes: every rule, every registered code."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, view, rule)
    problems = sorted(PROBLEMS, key=lambda cls: cls.code)
    return {
        "openapi": "3.1.0",
        "info": {"title": "clerk-gateway", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "clerkSession": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminKey": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string", "enum": [cls.code for cls in problems]},
                    },
                }
            },
        },
        # One entry per code: its HTTP status and title, for clients that switch on `code`.
        "x-problem-codes": {
            cls.code: {"status": cls.status, "title": cls.title} for cls in problems
        },
    }


# What a route answers when it succeeds, where that is not 200 application/json (schemathesis
# checks every answer against the document: tests/test_schemathesis.py).
_SUCCESS: dict[str, dict[str, str]] = {
    "metrics.metrics_view": {"200": "text/plain"},
    # Not ready is an answer too: the same JSON shape, with the failing check "error".
    "health.readyz": {"200": "application/json", "503": "application/json"},
    "webhooks_admin.replay_webhook_event": {"202": "application/json"},
}
# The bodies the routes read (their own parsers answer invalid_body for anything else).
_REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "guards.process": {
        "type": "object",
        "required": ["service", "payload"],
        "properties": {"service": {"type": "string"}, "payload": {"type": "object"}},
    },
    "webhooks.receive_clerk_webhook": {
        "type": "object",
        "required": ["type", "data"],
        "properties": {"type": {"type": "string"}, "data": {"type": "object"}},
    },
}
# The query parameters the routes read.
_QUERY: dict[str, list[str]] = {
    "webhooks_admin.list_webhook_events": ["status", "type", "limit"],
}


def _operation(endpoint: str, view: Any, rule: Any) -> dict[str, Any]:
    successes = _SUCCESS.get(endpoint, {"200": "application/json"})
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": ((view.__doc__ or "").strip().splitlines() or [endpoint])[0],
        "responses": {
            **{
                status: {"description": "Success", "content": {media_type: {"schema": {}}}}
                for status, media_type in successes.items()
            },
            "default": {
                "description": "An error (RFC 9457)",
                "content": {
                    PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            },
        },
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in sorted(rule.arguments)
    ] + [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in _QUERY.get(endpoint, [])
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint in _REQUEST_BODIES:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _REQUEST_BODIES[endpoint]}},
        }
    if getattr(view, "admin_key", False):
        operation["security"] = [{"adminKey": []}]
    elif not is_public(view):
        operation["security"] = [{"clerkSession": []}]
    return operation
