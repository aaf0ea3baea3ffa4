"""Hypothesis settings for the property tests: bounded and derandomized, so CI runs are stable."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# The same examples on every run (derandomize), no example database under the checkout, and no
# per-example deadline on a busy 2-core machine: each test is bounded by its example count.
BOUNDED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
