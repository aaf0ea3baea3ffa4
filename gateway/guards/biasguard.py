"""BiasGuard on login (CONTRACT 4.2): ask the `biasguard` guard, audit the decision, enforce it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, scoped_session

from gateway.auth.claims import SessionClaims
from gateway.guards.client import GuardOutcome
from gateway.guards.problems import BiasguardDenied, BiasguardUnavailable
from gateway.guards.runtime import GuardRuntime
from gateway.models import BiasguardAuditLog

SERVICE = "biasguard"
ALLOWED, DENIED, UNAVAILABLE = "allowed", "denied", "unavailable"


def check_login(
    runtime: GuardRuntime,
    session: Session | scoped_session[Any],
    *,
    user_id: int | None,
    session_claims: SessionClaims,
    email: str | None,
    token: str | None,
    request_id: str,
    fail_closed: bool,
) -> dict[str, Any]:
    """The verdict for the login response's "biasguard" key; raises when the login must stop.

    Call it after the login's own transaction committed: it commits the audit row, which must
    survive a refusal (the 403 is exactly what an auditor wants to find).
    """
    # The token travels in Authorization like on every guard call, never in the body.
    clerk_user_id = session_claims.user_id
    context = {
        "event": "login",
        "user_id": user_id,
        "clerk_user_id": clerk_user_id,
        "email": email,
        "request_id": request_id,
    }
    # Never guard_unknown: Config.validate refuses BIASGUARD_ON_LOGIN without a biasguard guard.
    outcome = runtime.client.call(
        SERVICE, context, token=token, session=session_claims, request_id=request_id
    )
    decision, error = decide(outcome)
    details = {"status_code": outcome.status_code, "response": outcome.data}
    session.add(
        BiasguardAuditLog(
            user_id=user_id,
            clerk_user_id=clerk_user_id,
            decision=decision,
            details=details,
            latency_ms=outcome.latency_ms,
            error=error,
            request_id=request_id,
        )
    )
    session.commit()
    if decision == DENIED:
        raise BiasguardDenied()
    if decision == UNAVAILABLE and fail_closed:
        raise BiasguardUnavailable()
    verdict: dict[str, Any] = {"decision": decision, "latency_ms": outcome.latency_ms}
    if decision == ALLOWED:
        verdict["details"] = outcome.data
    else:
        verdict["error"] = error
    return verdict


def decide(outcome: GuardOutcome) -> tuple[str, str | None]:
    """(decision, error). Only an explicit boolean `allowed` in a 2xx JSON object is an answer."""
    if outcome.problem is not None:
        return UNAVAILABLE, f"{outcome.problem.code}: {outcome.problem.detail}"
    status = outcome.status_code or 0
    allowed = outcome.data.get("allowed") if isinstance(outcome.data, dict) else None
    if not 200 <= status < 300 or not isinstance(allowed, bool):
        return UNAVAILABLE, f"unexpected answer: HTTP {status} without a boolean 'allowed'"
    return (ALLOWED, None) if allowed else (DENIED, None)
