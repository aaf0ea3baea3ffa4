"""Cross-origin browsers (CONTRACT 4.9): Flask-CORS on the API routes, for listed origins only.

A web app on another origin sends the Clerk token in `Authorization`, which makes the browser
send a preflight first. Listed origins (CORS_ORIGINS, else CLERK_AUTHORIZED_PARTIES) get their
own origin back, never `*`; any other origin gets no Access-Control-* header at all, so the
browser refuses the answer. No credentials mode: the token travels in a header, not a cookie (a
cookie session stays same-origin, behind the CSRF rule of the auth hook).
"""

from __future__ import annotations

import re

from flask import Flask, Response, request
from flask_cors import CORS

from gateway.config import Config

API_PREFIX = "/api/"
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
ALLOWED_METHODS = ("GET", "POST")
# How long a browser may reuse a preflight answer (Chrome caps this at 2 hours).
MAX_AGE_SECONDS = 600


def init_app(app: Flask, config: Config) -> None:
    if not config.cors_origins:
        return  # nobody listed: no cross-origin access, and no per-request cost
    app.before_request(answer_preflight)
    CORS(
        app,
        resources={rf"{API_PREFIX}.*": {}},
        # Escaped, anchored and case-insensitive (RFC 6454 origins compare so): a listed origin
        # is matched literally, brackets of an IPv6 host included. Patterns (not plain strings)
        # also make Flask-CORS send `Vary: Origin` with a single listed origin, which it
        # otherwise leaves out; a shared cache needs it whenever the answer depends on Origin.
        origins=[
            re.compile(re.escape(origin) + r"\Z", re.IGNORECASE) for origin in config.cors_origins
        ],
        methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=["X-Request-ID", "Retry-After", "WWW-Authenticate"],
        max_age=MAX_AGE_SECONDS,
        supports_credentials=False,
        send_wildcard=False,
        # Off: without it, a request with no Origin would get every listed origin back.
        always_send=False,
        # Error responses already pass through after_request (our handlers return responses),
        # so Flask-CORS need not wrap Flask's exception handlers.
        intercept_exceptions=False,
    )


def answer_preflight() -> Response | None:
    """A preflight to an API route is answered here, 204 and empty, before the auth hook and the
    view; Flask-CORS then adds the Access-Control-* headers when the origin is listed."""
    if (
        request.method == "OPTIONS"
        and request.url_rule is not None
        and request.path.startswith(API_PREFIX)
        and "Access-Control-Request-Method" in request.headers
    ):
        return Response(status=204)
    return None
