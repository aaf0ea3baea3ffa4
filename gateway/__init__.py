"""clerk-gateway: a Flask gateway that verifies Clerk sessions and syncs Clerk users."""

from gateway.app import create_app

__all__ = ["create_app"]
