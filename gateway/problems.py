"""Every problem the gateway answers, listed once: the OpenAPI code list and /metrics read this.

Registered by hand rather than by subclassing, so that what the document shows never depends on
which modules happened to be imported first. tests/gateway/test_openapi.py checks that every
Problem subclass with its own code is listed here.
"""

from __future__ import annotations

from gateway.auth.authorization import PermissionDenied
from gateway.auth.service import ClerkDisabled
from gateway.auth.token_problems import (
    CsrfOrigin,
    JwkKidMismatch,
    JwkRemoteFailedToLoad,
    SessionPending,
    TokenExpired,
    TokenIatInTheFuture,
    TokenInvalid,
    TokenInvalidAlgorithm,
    TokenInvalidAudience,
    TokenInvalidAuthorizedParties,
    TokenInvalidIssuer,
    TokenInvalidSignature,
    TokenMissing,
    TokenNotActiveYet,
    TokenTypeMismatch,
)
from gateway.billing.entitlement import SubscriptionRequired
from gateway.billing.problems import (
    StripeCustomerAlreadyLinked,
    StripeCustomerNotFound,
    StripeDisabled,
    StripeRequestFailed,
    StripeUnavailable,
    StripeUserAlreadyLinked,
)
from gateway.clerk_api import ClerkApiUnavailable
from gateway.errors import (
    BadRequest,
    InternalError,
    InvalidBody,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
)
from gateway.guards.problems import (
    BiasguardDenied,
    BiasguardUnavailable,
    GuardTimeout,
    GuardUnavailable,
    GuardUnknown,
    GuardUpstreamError,
)
from gateway.metrics import MetricsTokenInvalid
from gateway.organizations.service import OrganizationNotFound
from gateway.users.backfill import BackfillFailed
from gateway.users.service import EmailRequired, UserDataInvalid, UserDeactivated, UserNotFound
from gateway.webhooks.admin import AdminKeyInvalid
from gateway.webhooks.operations import InvalidQuery, WebhookEventInProgress, WebhookEventNotFound
from gateway.webhooks.service import DatabaseUnavailable
from gateway.webhooks.signatures import WebhookSignatureInvalid, WebhooksNotConfigured

PROBLEMS: tuple[type[Problem], ...] = (
    # gateway.errors: the generic ones, internal_error included
    InternalError, BadRequest, InvalidBody, NotFound, MethodNotAllowed, PayloadTooLarge,
    # auth
    TokenMissing, TokenInvalid, TokenInvalidAlgorithm, TokenInvalidSignature, TokenExpired,
    TokenNotActiveYet, TokenIatInTheFuture, TokenInvalidIssuer, TokenInvalidAuthorizedParties,
    SessionPending, TokenTypeMismatch, TokenInvalidAudience, JwkKidMismatch,
    JwkRemoteFailedToLoad, CsrfOrigin, PermissionDenied,
    ClerkDisabled, ClerkApiUnavailable,
    # users and organizations
    EmailRequired, UserDataInvalid, UserNotFound, UserDeactivated, BackfillFailed,
    OrganizationNotFound,
    # webhooks
    WebhookSignatureInvalid, WebhooksNotConfigured, DatabaseUnavailable, WebhookEventNotFound,
    WebhookEventInProgress, InvalidQuery, AdminKeyInvalid,
    # guards
    GuardUnknown, GuardUpstreamError, GuardUnavailable, GuardTimeout, BiasguardDenied,
    BiasguardUnavailable,
    # operations
    MetricsTokenInvalid,
    # billing
    StripeUnavailable, StripeRequestFailed, StripeCustomerAlreadyLinked, StripeUserAlreadyLinked,
    StripeCustomerNotFound, StripeDisabled, SubscriptionRequired,
)  # fmt: skip

BY_CODE: dict[str, type[Problem]] = {cls.code: cls for cls in PROBLEMS}
