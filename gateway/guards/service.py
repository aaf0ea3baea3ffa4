"""Forward one guard call and record it: the use case behind POST /api/v1/guards/process."""

from __future__ import annotations

from typing import Any

from gateway.auth.authorization import PermissionDenied, ensure_authorized
from gateway.auth.claims import SessionClaims
from gateway.billing.entitlement import SubscriptionRequired, is_entitled
from gateway.errors import Problem
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
    session: SessionClaims | None,
    request_id: str,
    subscription_status: str | None = None,
    requires_subscription: bool = False,
) -> dict[str, Any]:
    """The CONTRACT 4.3 envelope for an upstream 2xx/4xx; raises the call's Problem otherwise.

    A guard gated by GUARD_PERMISSIONS is never called without the permission (403), one in
    GUARD_REQUIRES_SUBSCRIPTION unless `subscription_status` is active or trialing (402).
    """
    try:
        guard = runtime.client.registry.get(service)
        ensure_authorized(session, permission=guard.permission)
        if requires_subscription and not is_entitled(subscription_status):
            raise SubscriptionRequired()
        outcome = runtime.client.call(
            service,
            payload,
            token=token,
            session=session,
            request_id=request_id,
            subscription_status=subscription_status,
        )
    except (GuardUnknown, PermissionDenied, SubscriptionRequired) as problem:
        # Recorded too: unknown names and refused callers are usage worth seeing.
        refused: Problem = problem
        outcome = GuardOutcome(service, None, None, 0.0, refused)
    runtime.audit.submit(
        GuardRequestRecord(
            None if session is None else session.user_id,
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
