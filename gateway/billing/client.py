"""The Stripe client (timeouts, retries) and the translation of its errors into our problems."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import stripe

from gateway.billing.problems import StripeRequestFailed, StripeUnavailable
from gateway.config import Config

# stripe-python's own retries (connection errors, 409, 5xx; same idempotency key each time). The
# task adds slower retries with backoff on top for outages longer than a few seconds.
MAX_NETWORK_RETRIES = 2


# (connect, read) seconds: a job holds its per-user lock while it waits on Stripe.
HTTP_TIMEOUT = (5.0, 20.0)


LIST_PAGE_SIZE = 100


def make_client(api_key: str, api_base: str | None = None) -> stripe.StripeClient:
    """A client per call site: never stripe.api_key, which is global to the process."""
    # stripe-python logs every request at INFO, and Stripe's error messages (which may echo the
    # parameters sent, an email among them); we log outcomes ourselves.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=HTTP_TIMEOUT),
    )


def client_from_config(config: Config) -> stripe.StripeClient | None:
    """None when STRIPE_API_KEY is unset: Stripe linking is off."""
    if not config.stripe_api_key:
        return None
    return make_client(config.stripe_api_key, config.stripe_api_base)


@contextmanager
def translated(passthrough: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn stripe-python's errors into our two kinds: retry later, or do not retry."""
    try:
        yield
    except passthrough:
        raise
    except stripe.StripeError as exc:
        if is_transient(exc):
            raise StripeUnavailable(_describe(exc)) from None
        raise permanent_problem(exc) from None


def is_transient(exc: stripe.StripeError) -> bool:
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.IdempotencyError):
        return exc.http_status == 409  # a concurrent request with the same key is in flight
    if isinstance(exc, stripe.APIError):
        status = exc.http_status
        return status is None or status == 409 or status >= 500
    return False


def permanent_problem(exc: stripe.StripeError) -> StripeRequestFailed:
    return StripeRequestFailed(_describe(exc))


def _describe(exc: stripe.StripeError) -> str:
    # Never Stripe's message: it may echo the parameters we sent (an email address).
    parts = [type(exc).__name__, f"HTTP {exc.http_status}" if exc.http_status else "no response"]
    if exc.code:
        parts.append(f"code {exc.code}")
    if exc.request_id:
        parts.append(f"request {exc.request_id}")
    return "Stripe: " + ", ".join(parts) + "."
