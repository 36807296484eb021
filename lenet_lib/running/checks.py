"""What every check of params/ shares: ConfigError (a user error, named with the valid values), the
profiles, a parameter's name and type against the notebook's parameters cell, and a matrix expanded into
its runs."""
from __future__ import annotations

import difflib
import itertools
from pathlib import Path

PROFILES = ("quick", "default", "full")
INJECTED = ("output_dir", "run_id")       # set by the runner for every run
_UNKNOWN = object()     # a default that is not a literal (e.g. 2 ** 10): its type is not checked


class ConfigError(ValueError):
    """A user error in params/, on the command line or in a notebook's parameters cell."""


def listing(values) -> str:
    return ", ".join(map(str, values)) or "(none)"


def did_you_mean(name, valid) -> str:
    close = difflib.get_close_matches(str(name), list(map(str, valid)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_type(where: str, name: str, value, default) -> None:
    """value must have the type of the notebook's default (an int is fine for a float).

    A None default takes anything; a None value passes too (null means "all" or "off", e.g.
    train_size: null), and check_parameters decides whether the parameter allows it.
    """
    if default is None or default is _UNKNOWN or value is None:
        return
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
            except ValueError:
                pass
        raise ConfigError(f"{where}: {name}={value!r} has type {type(value).__name__}, but the notebook's "
                          f"default {default!r} has type {type(default).__name__}{hint}")


def _check_names(where: str, parameters: dict, defaults: dict, nb_path: Path) -> None:
    """Every name is in the notebook's parameters cell (and not injected), every value of its type."""
    for name, value in parameters.items():
        if name in INJECTED:
            raise ConfigError(f"{where}: {name} is set by the runner; remove it")
        if name not in defaults:
            raise ConfigError(f"{where}: parameter {name!r} is not in the parameters cell of {nb_path}"
                              f"{did_you_mean(name, defaults)}; valid names: "
                              f"{listing(sorted(set(defaults) - set(INJECTED)))}")
        _check_type(where, name, value, defaults[name])
        if name == "timing_rounds" and value == 0 and "train" not in defaults:
            raise ConfigError(f"{where}: timing_rounds=0 is not valid for {nb_path.name}: its answers need the "
                              f"timing; expected timing_rounds >= 1 (notebooks with a `train` parameter may skip it)")


def expand(matrix: dict) -> list[dict]:
    """The cartesian product of the matrix, in file order: one dict per run."""
    return [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())]

