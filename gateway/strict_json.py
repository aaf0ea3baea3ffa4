"""JSON as RFC 8259 has it: Python's json also reads NaN, Infinity and 1e999 (as infinity)."""

from __future__ import annotations

import math
from typing import Any


def reject_constant(name: str) -> Any:
    """json.loads(parse_constant=...): NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def finite_float(literal: str) -> float:
    """json.loads(parse_float=...): a literal that overflows to infinity (1e999) is refused."""
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


# For json.loads(text, **STRICT).
STRICT: dict[str, Any] = {"parse_constant": reject_constant, "parse_float": finite_float}
