"""JSON logs, one object per line, with the request id; secrets and emails scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Order matters: the JWT pattern runs before the generic bearer rule so a token is named as such.
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"(?i)(bearer\s+)[^\s,;\"']+"), r"\1[redacted]"),
    (re.compile(r"\b(whsec|sk_live|sk_test|rk_live|rk_test)_[A-Za-z0-9+/=_-]+"), r"\1_[redacted]"),
    (re.compile(r"(?i)(__session=)[^\s;\"']+"), r"\1[redacted]"),
    # Keep the first character and the domain: enough to tell users apart in an incident, not more.
    (
        re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@|%40)([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b"),
        r"\1***\2\3",
    ),
)


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key in ("event_id", "task_id", "status", "method", "path", "duration_ms", "code"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str))


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
