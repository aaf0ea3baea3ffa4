"""Billing: the link between local users and Stripe customers."""
