"""Clerk organizations mirrored from webhooks, and the operator view of them."""
