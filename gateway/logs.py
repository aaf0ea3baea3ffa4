"""JSON logs, one object per line, with the request id; secrets and emails scrubbed."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
ACCESS_LOGGER = "gateway.access"
access_log = logging.getLogger(ACCESS_LOGGER)
# Methods logged as sent; anything else is client text like a path, and scrubbed like one.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# `correlation_id`: the client's own X-Request-ID, when it sent a well-formed one.
_EXTRA_KEYS = (
    "event_id", "event_ids", "task_id", "status", "method", "path", "correlation_id",
    "duration_ms", "code",
)  # fmt: skip

# Order matters: the JWT pattern runs before the generic bearer rule so a token is named as such.
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"(?i)(bearer\s+)[^\s,;\"']+"), r"\1[redacted]"),
    (re.compile(r"\b(whsec|sk_live|sk_test|rk_live|rk_test)_[A-Za-z0-9+/=_-]+"), r"\1_[redacted]"),
    (re.compile(r"(?i)(__session=)[^\s;\"']+"), r"\1[redacted]"),
    # Keep the first character and the domain: enough to tell users apart in an incident, not more.
    # Any characters (josé.garcia@bücher.de): \w is Unicode here, and the local part is whatever
    # runs up to the @ that is not a space or a delimiter.
    (
        re.compile(
            r"(?<![^\s\"'<>()\[\],;:/=])([^\s\"'<>()\[\],;:/=@])[^\s\"'<>()\[\],;:/@]*"
            r"(@|%40)((?:[\w%-]+\.)+[\w%-]{2,})"
        ),
        r"\1***\2\3",
    ),
)


# Every scrubber above needs one of these in the text to match (tests/gateway/test_logs.py checks
# it for each sample secret): most paths have none, and are then not run through all five.
_SCRUB_HINT = re.compile(r"[@_\s]|%40|eyJ")


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


class _RequestIds:
    """Request ids of this process: 16 random hex digits drawn in the process, then a counter.

    32 hex digits like a uuid4, without 16 bytes of os.urandom per request; the prefix is drawn
    again in a forked child (gunicorn workers), so no two processes share a series.
    """

    def __init__(self) -> None:
        self._series: tuple[str, Iterator[int]] | None = None
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._series = None

    def new(self) -> str:
        series = self._series
        if series is None:
            series = self._series = (os.urandom(8).hex(), itertools.count())
        prefix, counter = series
        return f"{prefix}{next(counter):016x}"


new_request_id = _RequestIds().new


def log_access(
    method: str,
    path: str,
    status: int,
    duration_ms: float | None,
    request_id: str | None,
    correlation_id: str | None = None,
) -> None:
    """The access line of one request, built cheaply: it runs on every request.

    The path (and an unusual method) is the only client text in the line, so it alone is scrubbed,
    here, before any handler sees the record; the request id is validated to [A-Za-z0-9._:-]{1,64}
    (app.py), which holds no token, secret or email. The formatter then writes the line without
    scanning it again with every pattern (JsonFormatter._access_line).
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    if _SCRUB_HINT.search(path):
        path = scrub(path)
    if method not in HTTP_METHODS:
        method = scrub(method)
    # correlation_id: the client's own X-Request-ID, validated like ours (app.py), never scrubbed.
    fields = {"method": method, "path": path, "status": status, "duration_ms": duration_ms,
              "request_id": request_id, "correlation_id": correlation_id,
              "access": True}  # fmt: skip
    # makeRecord + handle: what Logger.info does, minus the caller lookup (findCaller walks the
    # stack for a file and line the JSON line never shows).
    record = access_log.makeRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        0,
        "%s %s %s",
        (method, path, status),
        None,
        extra=fields,
    )
    access_log.handle(record)


class _UtcClock:
    """ISO 8601 UTC with milliseconds; the part up to the second is built once a second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # one tuple, read once: safe across threads

    def iso(self, created: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        return f"{cached[1]}.{int((created - second) * 1000):03d}+00:00"


_clock = _UtcClock()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "access", False):
            return self._access_line(record)
        entry: dict[str, Any] = {
            "ts": _clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = format_exception(record.exc_info[1])
        # Scrubbed before encoding: json.dumps escapes non-ASCII (\u00e9), which no pattern for
        # an email should have to know about.
        return json.dumps(
            {
                key: scrub(value) if isinstance(value, str) else value
                for key, value in entry.items()
            },
            default=str,
        )

    @staticmethod
    def _access_line(record: Any) -> str:
        """A log_access record: its client text was scrubbed when the record was made."""
        dumps = json.dumps
        request_id = record.request_id or request_id_var.get()
        return (
            f'{{"ts": "{_clock.iso(record.created)}", "level": "{record.levelname.lower()}", '
            f'"logger": "{record.name}", "msg": {dumps(record.getMessage())}, '
            + (f'"request_id": {dumps(request_id)}, ' if request_id else "")
            + (
                f'"correlation_id": {dumps(record.correlation_id)}, '
                if getattr(record, "correlation_id", None)
                else ""
            )
            + f'"status": {int(record.status)}, "method": {dumps(record.method)}, '
            f'"path": {dumps(record.path)}, "duration_ms": {_number(record.duration_ms)}}}'
        )


# Database errors quote row values (psycopg's DETAIL: "Key (email)=(...)", a value that did not
# parse); their messages never reach the logs, only their class and SQLSTATE (CONTRACT 6).
_DATABASE_MODULES = ("sqlalchemy", "psycopg")


def format_exception(exc: BaseException) -> str:
    """The traceback, cause chain included, with database error messages withheld."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        cause = current.__cause__
        current = (
            cause if cause is not None or current.__suppress_context__ else current.__context__
        )
    parts = []
    for item in reversed(chain):
        frames = "".join(traceback.format_tb(item.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{_describe(item)}")
    return "\n\nThe above led to:\n\n".join(parts)


def _describe(exc: BaseException) -> str:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    if not cls.__module__.startswith(_DATABASE_MODULES):
        return f"{name}: {exc}"
    sqlstate = getattr(getattr(exc, "orig", exc), "sqlstate", None)
    return f"{name}: [message withheld: may quote row values] sqlstate={sqlstate}"


def _number(value: float | None) -> str:
    # json.dumps takes its slow, general path for anything but a string.
    return "null" if value is None else repr(float(value))


def configure_logging(level: int = logging.INFO) -> None:
    """Idempotent: gunicorn workers, Celery and the CLI all call create_app."""
    # urllib3 logs request URLs, query strings included (a guard URL may carry its key, as in
    # Azure Functions' ?code=); our clients log their own outcomes without URLs.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # Replace plain stream handlers (basicConfig, gunicorn's defaults); keep others (test capture).
    root.handlers = [h for h in root.handlers if type(h) is not logging.StreamHandler] + [handler]
    root.setLevel(level)
    # Werkzeug's dev-server access log would print raw paths; we log requests ourselves.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
