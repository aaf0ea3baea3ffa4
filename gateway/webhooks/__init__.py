"""Clerk webhooks: the Svix-verified inbox, its ledger, the worker-side apply and the admin view."""
