"""Models, one module per aggregate."""

from gateway.models.audit import BiasguardAuditLog, GuardRequest
from gateway.models.base import Base
from gateway.models.organization import Organization, OrganizationMembership
from gateway.models.user import User
from gateway.models.webhook_event import EventSource, EventStatus, WebhookEvent

__all__ = [
    "Base",
    "BiasguardAuditLog",
    "EventSource",
    "EventStatus",
    "GuardRequest",
    "Organization",
    "OrganizationMembership",
    "User",
    "WebhookEvent",
]
