"""Checks that turn bad input into one clear error before any work starts."""
from __future__ import annotations

import math
import numbers


def check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}")


def check_range(name: str, value, lo: float, hi: float = math.inf, *, lo_open=False, hi_open=False) -> None:
    """value must be a finite number in [lo, hi] (open at either end when asked)."""
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name}={value!r} is not valid; expected a number in {left}{lo}, {hi}{right}")


def is_integer(value) -> bool:
    """An int or a NumPy integer, not a bool (True is an int to Python, never a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, _np_bool()))


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, _np_bool()))


def _np_bool():
    import numpy as np
    return np.bool_


def check_positive_int(name: str, value) -> None:
    if not (is_integer(value) and value > 0):
        raise ValueError(f"{name}={value!r} is not valid; expected a positive integer")


def check_nonneg_int(name: str, value) -> None:
    if not (is_integer(value) and value >= 0):
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 0")


def check_bool(name: str, value) -> None:
    if not isinstance(value, (bool, _np_bool())):
        raise ValueError(f"{name}={value!r} is not valid; expected True or False")
