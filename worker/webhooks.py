"""Webhook tasks."""
