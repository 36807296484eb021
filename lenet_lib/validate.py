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


def _each(check):
    """A check for a list parameter (e.g. seeds) built from the check of one element."""
    def check_list(name, values):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name}={values!r} is not valid; expected a non-empty list")
        for i, value in enumerate(values):
            check(f"{name}[{i}]", value)
    return check_list


def _optional(check):
    def check_or_none(name, value):
        if value is not None:
            check(name, value)
    return check_or_none


def _parameter_checks() -> dict:
    # Imported here: choices.py uses this module's checks. Torch-free, so a cached report starts fast.
    from .choices import (ACTIVATION_NAMES as ACTIVATIONS, DATASET_NAMES as DATASETS, DEFAULT_LR as OPTIMIZERS,
                          NORMALIZATIONS, POOL_NAMES as POOLS, PRECISIONS)

    def choice(valid):
        return lambda name, value: check_choice(name, value, tuple(valid))

    def nonneg_int(name, value):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 0")

    def lr(name, value):
        check_range(name, value, 0.0, lo_open=True)

    def prob(name, value):
        check_range(name, value, 0.0, 1.0, hi_open=True)

    def device(name, value):
        if not (value in ("auto", "cpu") or str(value).startswith("cuda")):
            raise ValueError(f"{name}={value!r} is not valid; choose 'auto', 'cpu' or 'cuda[:N]'")

    return {
        "dataset": choice(DATASETS), "datasets": _each(choice(DATASETS)),
        "optimizer": choice(OPTIMIZERS), "optimizers": _each(choice(OPTIMIZERS)),
        "activation": choice(ACTIVATIONS), "pool": choice(POOLS), "normalize": choice(NORMALIZATIONS),
        "precision": choice(PRECISIONS), "device": device,
        "lr": _optional(lr), "lrs": _each(lr), "lr_grid": _each(lr),
        "momentum": _optional(lambda n, v: check_range(n, v, 0.0, 1.0, hi_open=True)),
        "weight_decay": lambda n, v: check_range(n, v, 0.0),
        "dropout": prob, "dropouts": _each(prob), "conv_dropout": prob,
        "epochs": check_positive_int, "batch_size": check_positive_int,
        "batch_sizes": _each(check_positive_int),
        "seeds": _each(nonneg_int), "seed": nonneg_int, "split_seed": nonneg_int,
        "train_size": _optional(check_positive_int), "test_size": _optional(check_positive_int),
        "val_size": nonneg_int,
        "fc_activation": _optional(choice(ACTIVATIONS)), "mlp_activation": choice(ACTIVATIONS),
        "mlp_optimizer": choice(OPTIMIZERS), "mlp_lr": _optional(lr),
        "claimed_best": check_positive_int, "tsne_points": check_positive_int,
    }


def check_parameters(parameters: dict) -> None:
    """Check the values of known notebook parameters (dataset, optimizer(s), lr(s), seeds, ...).

    Raises ValueError naming the parameter, the bad value and the valid ones. Names it does not know
    are left to the caller (the runner checks them against the notebook's parameters cell).
    """
    checks = _parameter_checks()
    for name, value in parameters.items():
        if name in checks:
            checks[name](name, value)
