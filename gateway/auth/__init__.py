"""Clerk session authentication."""
