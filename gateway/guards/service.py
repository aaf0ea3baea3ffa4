"""Forward one guard call and record it: the use case behind POST /api/v1/guards/process."""

from __future__ import annotations

from typing import Any

from gateway.guards.audit import GuardRequestRecord
from gateway.guards.client import GuardOutcome
from gateway.guards.problems import GuardUnknown
from gateway.guards.runtime import GuardRuntime


def process_guard_call(
    runtime: GuardRuntime,
    service: str,
    payload: dict[str, Any],
    *,
    token: str | None,
    clerk_user_id: str | None,
    request_id: str,
) -> dict[str, Any]:
    """The CONTRACT 4.3 envelope for an upstream 2xx/4xx; raises the call's Problem otherwise."""
    try:
        outcome = runtime.client.call(
            service, payload, token=token, clerk_user_id=clerk_user_id, request_id=request_id
        )
    except GuardUnknown as problem:  # recorded too: usage by unknown names is worth seeing
        outcome = GuardOutcome(service, None, None, 0.0, problem)
    runtime.audit.submit(
        GuardRequestRecord(
            clerk_user_id,
            outcome.service,
            outcome.status_code,
            outcome.outcome,
            outcome.latency_ms,
            request_id,
        )
    )
    if outcome.problem is not None:
        raise outcome.problem
    return {
        "service": outcome.service,
        "status_code": outcome.status_code,
        "data": outcome.data,
        "request_id": request_id,
        "latency_ms": outcome.latency_ms,
    }
