"""Celery tasks: thin shims over gateway services. Imports go worker -> gateway, never back."""
