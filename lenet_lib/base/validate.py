"""The notebooks' parameters, checked against the vocabulary (choices) before any run starts."""
from __future__ import annotations

from lenet_lib.base.checks import check_bool, check_choice, check_nonneg_int, check_positive_int, check_range
from lenet_lib.base.choices import (ACTIVATION_NAMES as ACTIVATIONS, BATCHINGS, BN_LAYERS, BN_POSITIONS,
                                    DATASET_NAMES as DATASETS, DEFAULT_LR as OPTIMIZERS, DROPOUT_AT, DROPOUT_SITES,
                                    INPUT_SIZES, NORMALIZATIONS, PADDINGS, POOL_NAMES as POOLS, PRECISIONS,
                                    RESIZE_MODES)


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
    def choice(valid):
        return lambda name, value: check_choice(name, value, tuple(valid))

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
        "bn_position": choice(BN_POSITIONS), "bn_layers": choice(BN_LAYERS), "dropout_at": choice(DROPOUT_AT),
        "dropout_site": choice(DROPOUT_SITES), "input_size": _optional(choice(INPUT_SIZES)),
        "resize": choice(RESIZE_MODES), "padding": choice(PADDINGS),
        "r2_activation": choice(ACTIVATIONS), "r2_padding": choice(PADDINGS), "r2_normalize": choice(NORMALIZATIONS),
        "r2_batching": choice(BATCHINGS),
        "lr": _optional(lr), "lrs": _each(lr), "lr_grid": _each(lr), "lr_factors": _each(lr),
        "momentum": _optional(lambda n, v: check_range(n, v, 0.0, 1.0, hi_open=True)),
        "weight_decay": lambda n, v: check_range(n, v, 0.0),
        "dropout": prob, "dropouts": _each(prob), "conv_dropout": prob,
        "epochs": check_positive_int, "batch_size": check_positive_int, "r2_epochs": check_positive_int,
        "batch_sizes": _each(check_positive_int),
        "seeds": _each(check_nonneg_int), "tune_seeds": _each(check_nonneg_int), "seed": check_nonneg_int,
        "split_seed": check_nonneg_int,
        "train_size": _optional(check_positive_int), "test_size": _optional(check_positive_int),
        "r2_train_size": _optional(check_positive_int), "val_size": check_nonneg_int,
        "fc_activation": _optional(choice(ACTIVATIONS)), "mlp_activation": choice(ACTIVATIONS),
        "mlp_optimizer": choice(OPTIMIZERS), "mlp_lr": _optional(lr),
        "claimed_best": check_positive_int, "tsne_points": check_positive_int, "top_mistakes": check_positive_int,
        "timing_rounds": check_positive_int, "timing_calls": check_positive_int,
        "timing_repeats": check_positive_int, "threads": check_positive_int,
        "epoch_timing_rounds": check_nonneg_int, "epoch_timing_eval": check_bool,     # 0 rounds: not measured
        "epoch_timing_fraction": lambda n, v: check_range(n, v, 0.0, 1.0, lo_open=True),
        "tune": check_bool, "mlp": check_bool,
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
