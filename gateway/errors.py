"""Problem hierarchy (RFC 9457) and the one place every error is rendered as problem+json."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from flask import Flask, Request, Response, g, json, request
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import get_input_stream

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://clerk-gateway.dev/problems/"


class Problem(Exception):
    """An error with a stable machine code. Services raise these; errors.py renders them."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"
    default_detail: ClassVar[str] = "An unexpected error occurred; it has been logged."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.default_detail)
        self.detail = detail or self.default_detail
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }


class BadRequest(Problem):
    status, code, title = 400, "bad_request", "Bad request"
    default_detail = "The request could not be understood."


class InvalidBody(Problem):
    status, code, title = 400, "invalid_body", "Invalid request body"
    default_detail = "The request body is not valid JSON of the expected shape."


class NotFound(Problem):
    status, code, title = 404, "not_found", "Not found"
    default_detail = "There is nothing at this URL."


class MethodNotAllowed(Problem):
    status, code, title = 405, "method_not_allowed", "Method not allowed"
    default_detail = "This URL does not accept that method."


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload_too_large", "Payload too large"
    default_detail = "The request body is larger than this endpoint accepts."


class InternalError(Problem):
    """Anything unexpected: the base class's 500 internal_error, under its own name."""


_WERKZEUG_MAP: dict[int, type[Problem]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


class HttpErrorProblem(Problem):
    """Any other werkzeug HTTP error (415, 416, ...): its own status and name, in our format.

    Not in the OpenAPI code list (gateway/problems.py): its code is werkzeug's name of the status.
    """

    def __init__(self, exc: HTTPException) -> None:
        super().__init__(exc.description or exc.name)
        # Instance attributes over the class's: to_dict renders them like any other problem.
        self.status = exc.code or 500  # type: ignore[misc]
        self.title = exc.name  # type: ignore[misc]
        self.code = exc.name.lower().replace(" ", "_").replace("'", "")  # type: ignore[misc]


def problem_response(problem: Problem) -> Response:
    body = problem.to_dict()
    request_id = g.get("request_id") if g else None
    if request_id:
        body["request_id"] = request_id
    response = Response(json.dumps(body), status=body["status"], mimetype=PROBLEM_CONTENT_TYPE)
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


# An answer given before the body was read (413, 401, ...) must reach a client still sending it:
# the server drains little of an unread body (gunicorn: 64 KiB) and then closes the connection,
# which the client sees as a reset, never as our answer. So it is read and thrown away here, up to
# a bound; past it the server closes as before (CONTRACT 4.5).
DISCARD_MAX_BYTES = 16 * 1024 * 1024
DISCARD_MAX_SECONDS = 10.0
_DISCARD_CHUNK = 64 * 1024


def discard_unread_body(req: Request) -> None:
    """Read what is left of the request body, at most DISCARD_MAX_BYTES within the time bound.

    Bounded by the server's end-of-body mark (wsgi.input_terminated) or by Content-Length (the
    view's own stream, which knows how much it read); never the raw socket past the body, where
    reading would wait for a next request that the client sends only after our answer.
    """
    environ = req.environ
    if environ.get("wsgi.input_terminated"):
        # The server ends the body itself (gunicorn; werkzeug for chunked bodies): its own stream,
        # not the view's, which may be capped at MAX_CONTENT_LENGTH below the body's end.
        stream = environ["wsgi.input"]
    else:
        # werkzeug's cached_property, present once the view read the body; it knows how much.
        stream = req.__dict__.get("stream") or get_input_stream(environ, safe_fallback=True)
    deadline = time.monotonic() + DISCARD_MAX_SECONDS
    discarded = 0
    try:
        while discarded < DISCARD_MAX_BYTES and time.monotonic() < deadline:
            chunk = stream.read(_DISCARD_CHUNK)
            if not chunk:
                return
            discarded += len(chunk)
    except (OSError, ValueError, HTTPException) as exc:  # gone, malformed chunk, or cut short
        log.debug("request body not discarded: %s", type(exc).__name__)


def register_error_handlers(app: Flask) -> None:
    from gateway.extensions import db

    @app.after_request
    def discard_body_of_refused_request(response: Response) -> Response:
        # Success paths read their bodies; only refusals may leave one unread.
        if response.status_code >= 400:
            discard_unread_body(request)
        return response

    @app.errorhandler(Problem)
    def handle_problem(problem: Problem) -> Response:
        g.problem_code = problem.code  # counted by /metrics (token failures by code)
        if problem.status >= 500:
            db.session.rollback()
        return problem_response(problem)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        cls = _WERKZEUG_MAP.get(exc.code or 500)
        response = problem_response(cls() if cls is not None else HttpErrorProblem(exc))
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        db.session.rollback()
        # The type only: a message may carry a token or an email. The stack goes to the log, never
        # to the client.
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        return problem_response(InternalError())
