"""The notebooks' parameters, checked against the vocabulary (choices) before any run starts."""
from __future__ import annotations

from lenet_lib.base.checks import check_bool, check_choice, check_nonneg_int, check_positive_int, check_range
from lenet_lib.base.choices import (ACTIVATION_NAMES as ACTIVATIONS, BATCHINGS, BN_LAYERS, BN_POSITIONS,
                                    DATASET_NAMES as DATASETS, DEFAULT_LR as OPTIMIZERS, DROPOUT_AT, DROPOUT_SITES,
                                    GRAD_SCALES, HYPERPARAMETER_SOURCES, INITS, INPUT_SIZES, LOSSES, NORMALIZATIONS,
                                    OPTIMIZER_RULES, PADDINGS, POOL_NAMES as POOLS, PRECISIONS, RESIZE_MODES,
                                    R2_PRINTED_OPTIMIZERS, TRAIN_ACC_ON, TRAIN_ORDERS)
from lenet_lib.base.datafiles import TRAIN_IMAGES


def _each(check):
    """A check for a list parameter (e.g. seeds) built from the check of one element; each value once (a
    repeated seed or batch size would train the same model twice under one model id)."""
    def check_list(name, values):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name}={values!r} is not valid; expected a non-empty list")
        for i, value in enumerate(values):
            check(f"{name}[{i}]", value)
            if value in values[:i]:
                raise ValueError(f"{name}={list(values)!r} is not valid: {value!r} is given twice; list each "
                                 f"value once")
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
        "init": choice(INITS), "optimizer_rules": choice(OPTIMIZER_RULES), "grad_scale": choice(GRAD_SCALES),
        "train_acc_on": choice(TRAIN_ACC_ON), "loss": choice(LOSSES), "train_order": choice(TRAIN_ORDERS),
        "hyperparameters": choice(HYPERPARAMETER_SOURCES), "iterations": check_nonneg_int,
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
        "mlp_adagrad_init": lambda n, v: check_range(n, v, 0.0), "step_batch_sizes": _each(check_positive_int),
        "claimed_best": check_positive_int, "tsne_points": check_positive_int, "top_mistakes": check_positive_int,
        "timing_rounds": check_nonneg_int, "timing_calls": check_positive_int,     # 0 rounds: not timed
        "train": check_bool,
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
    _check_together(parameters)
    check_sizes(parameters)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_sizes(parameters: dict) -> None:
    """The data split fits the dataset and every batch fits the training set, checked on the values given
    (a run's parameters with its notebook's defaults see them all). Raises ValueError naming the value
    and its bound: a batch larger than the training set is otherwise met only inside the kernel, and
    inside_lenet's layer timing builds a batch that size."""
    dataset = parameters.get("dataset")
    datasets = [dataset] if isinstance(dataset, str) else [d for d in parameters.get("datasets") or []
                                                          if isinstance(d, str)]
    totals = {d: TRAIN_IMAGES[d] for d in datasets if d in TRAIN_IMAGES}
    val, train = _int(parameters.get("val_size")) or 0, _int(parameters.get("train_size"))
    for name, total in totals.items():
        if val + (train or 1) > total:
            split = f"val_size={val} plus train_size={train}" if train else f"val_size={val}"
            raise ValueError(f"{split} exceed the {total:,} training images of {name}; choose val_size + "
                             f"train_size <= {total:,}")
    training = train if train is not None else (min(totals.values()) - val if totals else None)
    if training is None:
        return
    batches = [("batch_size", _int(parameters.get("batch_size")))]
    batches += [(f"batch_sizes[{i}]", _int(b)) for i, b in enumerate(parameters.get("batch_sizes") or [])]
    for name, batch in batches:
        if batch is not None and batch > training:
            source = f"train_size={train}" if train is not None else f"{'/'.join(totals)} less val_size={val}"
            raise ValueError(f"{name}={batch} is larger than the training set ({training:,} images: {source}); "
                             f"choose {name.split('[')[0]} <= {training:,} or more training images")


def _check_together(parameters: dict) -> None:
    """Values that are valid alone but not with each other."""
    iterations, epochs = parameters.get("iterations", 0), parameters.get("epochs", 1)
    if iterations and iterations % epochs:
        raise ValueError(f"iterations={iterations} is not valid with epochs={epochs}: the iterations are recorded "
                         f"in `epochs` equal blocks; expected a multiple of {epochs}")
    if parameters.get("train") is False and parameters.get("timing_rounds") == 0:
        raise ValueError("train=False with timing_rounds=0 leaves the run nothing to do; give timing_rounds >= 1 "
                         "(a timing-only run) or train=True")
    printed = parameters.get("optimizer_rules") == "r2_printed" or parameters.get("hyperparameters") == "r2_printed"
    for name in ("optimizer", "optimizers"):
        values = parameters.get(name)
        values = [values] if isinstance(values, str) else values or []
        bad = [v for v in values if v not in R2_PRINTED_OPTIMIZERS]
        if printed and bad:
            raise ValueError(f"{name}={bad!r} is not valid with R2's printed rules or rates; "
                             f"choose from {list(R2_PRINTED_OPTIMIZERS)}")
    if parameters.get("mlp_adagrad_init") and parameters.get("mlp_optimizer", "adagrad") != "adagrad":
        raise ValueError(f"mlp_adagrad_init={parameters['mlp_adagrad_init']!r} is not valid with "
                         f"mlp_optimizer={parameters['mlp_optimizer']!r}; only 'adagrad' has an initial accumulator")
