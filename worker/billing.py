"""Stripe tasks."""
