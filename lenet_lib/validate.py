"""Checks that turn bad input into one clear error before any work starts."""
from __future__ import annotations

import math


def check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}")


def check_range(name: str, value, lo: float, hi: float = math.inf, *, lo_open=False, hi_open=False) -> None:
    """value must be a finite number in [lo, hi] (open at either end when asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name}={value!r} is not valid; expected a number in {left}{lo}, {hi}{right}")


def check_positive_int(name: str, value) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name}={value!r} is not valid; expected a positive integer")
