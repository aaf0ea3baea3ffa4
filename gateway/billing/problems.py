"""The Stripe side's problems: unreachable, refused, link conflicts, not configured."""

from __future__ import annotations

from gateway.errors import Problem


class StripeUnavailable(Problem):
    """Transient: rate limited, unreachable, or a 5xx. Retrying with the same key is safe."""

    status, code, title = 503, "stripe_unavailable", "Stripe unavailable"
    default_detail = "Stripe could not be reached or asked us to slow down; retry later."


class StripeRequestFailed(Problem):
    """Permanent: Stripe refused the request (invalid request, card, authentication)."""

    status, code, title = 502, "stripe_request_failed", "Stripe refused the request"
    default_detail = "Stripe refused the request; retrying will not help."


class StripeCustomerAlreadyLinked(Problem):
    status, code, title = 409, "stripe_customer_already_linked", "Customer already linked"
    default_detail = "That Stripe customer is already linked to another user."


class StripeUserAlreadyLinked(Problem):
    status, code, title = 409, "stripe_user_already_linked", "User already linked"
    default_detail = "The user is already linked to another Stripe customer."


class StripeCustomerNotFound(Problem):
    status, code, title = 404, "stripe_customer_not_found", "Stripe customer not found"
    default_detail = "Stripe has no such customer (or it was deleted)."


class StripeDisabled(Problem):
    status, code, title = 503, "stripe_disabled", "Stripe is not configured"
    default_detail = "STRIPE_API_KEY is not set, so Stripe linking is off."
