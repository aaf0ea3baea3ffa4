"""Stripe tasks: thin shims over gateway.billing.customers. Ids in, one short outcome out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import stripe as stripe_lib
from celery import Task, shared_task
from flask import current_app

from gateway.billing import customers
from gateway.billing.client import client_from_config
from gateway.billing.problems import StripeUnavailable
from gateway.errors import Problem
from gateway.extensions import DATABASE_DOWN_ERRORS, db
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, MARK_CUSTOMER_DELETED, PUSH_CUSTOMER_CHANGES
from worker.backoff import backoff_seconds

log = logging.getLogger(__name__)

# Outages of Stripe (or the database) longer than stripe-python's own quick retries: back off
# exponentially with jitter, so a fleet of jobs does not come back in step. About an hour in all,
# well under the broker's visibility timeout; every retry reuses the same idempotency key.
MAX_RETRIES = 10
# Stripe outages can last minutes: retries spread up to ten minutes apart.
BACKOFF_CAP_SECONDS = 600.0
# Worth a retry: Stripe or the database did not answer.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (StripeUnavailable, *DATABASE_DOWN_ERRORS)

Service = Callable[[Any, stripe_lib.StripeClient, int], customers.Outcome]


@shared_task(name=ENSURE_STRIPE_CUSTOMER, bind=True, max_retries=MAX_RETRIES)
def ensure_stripe_customer(self: Task, user_id: int) -> dict[str, Any]:
    return _run(self, "ensure_stripe_customer", customers.ensure_stripe_customer, user_id)


@shared_task(name=PUSH_CUSTOMER_CHANGES, bind=True, max_retries=MAX_RETRIES)
def push_customer_changes(self: Task, user_id: int) -> dict[str, Any]:
    return _run(self, "push_customer_changes", customers.push_customer_changes, user_id)


@shared_task(name=MARK_CUSTOMER_DELETED, bind=True, max_retries=MAX_RETRIES)
def mark_customer_deleted(self: Task, user_id: int) -> dict[str, Any]:
    return _run(self, "mark_customer_deleted", customers.mark_customer_deleted, user_id)


def _run(task: Task, job: str, service: Service, user_id: int) -> dict[str, Any]:
    extra = {"task_id": task.request.id}
    client = client_from_config(current_app.config["GATEWAY"])
    if client is None:
        log.info("%s user=%s: skipped, STRIPE_API_KEY is not set", job, user_id, extra=extra)
        return {"status": "stripe_disabled"}
    try:
        outcome = service(db.session, client, int(user_id))
    except TRANSIENT_ERRORS as exc:
        code = exc.code if isinstance(exc, Problem) else "database_unavailable"
        attempt = task.request.retries
        if attempt >= (task.max_retries or 0):
            log.error(
                "%s user=%s: failed after %d retries (%s); `flask stripe reconcile` lists it",
                job, user_id, attempt, code, extra=extra | {"code": code},
            )  # fmt: skip
            return {"status": "failed", "code": code}
        countdown = backoff_seconds(attempt, BACKOFF_CAP_SECONDS)
        log.warning(
            "%s user=%s: transient failure (%s), retry %d in %.1fs",
            job, user_id, _reason(exc), attempt + 1, countdown, extra=extra | {"code": code},
        )  # fmt: skip
        raise task.retry(countdown=countdown) from None
    except Problem as exc:
        # Refused by Stripe (invalid request, card, authentication) or a link conflict: the same
        # request would be refused again, so record it and stop.
        log.error(
            "%s user=%s: failed permanently (%s): %s",
            job, user_id, exc.code, exc.detail, extra=extra | {"code": exc.code},
        )  # fmt: skip
        return {"status": "failed", "code": exc.code}
    log.info(
        "%s user=%s: %s %s", job, user_id, outcome.status, outcome.customer_id or "", extra=extra
    )
    return {"status": outcome.status, "customer_id": outcome.customer_id}


def _reason(exc: Exception) -> str:
    return exc.detail if isinstance(exc, Problem) else type(exc).__name__
