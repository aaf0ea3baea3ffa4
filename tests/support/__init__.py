"""Test helpers: real processes and servers, started and stopped by the fixtures."""
