"""GET /openapi.json: the OpenAPI 3.1 document, built from the app's routes and Problem codes."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from gateway.auth.public import is_public, public
from gateway.errors import PROBLEM_CONTENT_TYPE, Problem

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
    problems = sorted(Problem.registry.values(), key=lambda cls: cls.code)
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


def _operation(endpoint: str, view: Any, rule: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": ((view.__doc__ or "").strip().splitlines() or [endpoint])[0],
        "responses": {
            "default": {
                "description": "An error (RFC 9457)",
                "content": {
                    PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        },
    }
    if rule.arguments:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in sorted(rule.arguments)
        ]
    if getattr(view, "admin_key", False):
        operation["security"] = [{"adminKey": []}]
    elif not is_public(view):
        operation["security"] = [{"clerkSession": []}]
    return operation
