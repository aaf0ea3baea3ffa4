"""The problems a guard call can end in (CONTRACT 4.2 and 4.3)."""

from __future__ import annotations

from gateway.errors import Problem


class GuardUnknown(Problem):
    status, code, title = 404, "guard_unknown", "Unknown guard service"
    default_detail = "No guard service has that name; GET /api/v1/guards lists them."


class GuardUpstreamError(Problem):
    status, code, title = 502, "guard_upstream_error", "Guard service error"
    default_detail = "The guard service failed or did not answer with JSON."


class GuardUnavailable(Problem):
    status, code, title = 503, "guard_unavailable", "Guard service unavailable"
    default_detail = "The guard service cannot be reached; retry later."


class GuardTimeout(Problem):
    status, code, title = 504, "guard_timeout", "Guard service timed out"
    default_detail = "The guard service did not answer in time."


class BiasguardDenied(Problem):
    status, code, title = 403, "biasguard_denied", "Login refused by BiasGuard"
    default_detail = "BiasGuard refused this login."


class BiasguardUnavailable(Problem):
    status, code, title = 503, "biasguard_unavailable", "BiasGuard unavailable"
    default_detail = "BiasGuard could not answer and logins require it; retry later."
