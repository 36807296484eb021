"""A preset's published figures (the reproduction scorecard's rows), checked: keys, metrics and values, and
the columns and values their where/versus name."""
from __future__ import annotations

import math

from lenet_lib.analysis.tidy import VARIANT_ORDER
from lenet_lib.base.choices import ARCHS, MODEL_DEFAULTS, TIMING_KINDS
from lenet_lib.base.validate import check_parameters
from lenet_lib.running.checks import INJECTED, ConfigError, did_you_mean, listing

FIGURE_KEYS = ("figure", "value", "metric", "epoch", "where", "versus", "reference", "rounded", "note", "timing")
METRICS = ("test_acc", "train_acc", "val_acc", "time_ratio", "forward_ratio", "parameters")
RATIO_METRICS = ("time_ratio", "forward_ratio")
# Columns a figure's where/versus may name beside the notebook's parameters and `variant`: what every
# training row carries (core/train.py: TrainSpec's fields, the data split's, device, precision, kernels),
# the timing table's (label, implementation) and the layers table's (model, layer, type, part).
WHERE_COLUMNS = (*MODEL_DEFAULTS, "arch", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs",
                 "seed", "model_id", "dataset", "train_size", "val_size", "test_size", "input_size", "resize",
                 "normalize", "split_seed", "device", "precision", "kernels", "status", "stage", "framework",
                 "label", "implementation", "model", "layer", "type", "part")


def where_columns(defaults: dict, parameters: dict, matrix: dict, *more: dict) -> dict:
    """{column: its valid values, or None for any value of a valid type} that a figure's where/versus may
    name: the notebook's parameters, the columns every training row and run table carries (WHERE_COLUMNS)
    and `variant`. A column whose values a list parameter of the preset enumerates (dropout: dropouts,
    batch_size: batch_sizes, ...) takes those values or the model's default; variant and arch their names."""
    columns = {name: None for name in [*defaults, *WHERE_COLUMNS] if name not in INJECTED}
    columns.update(variant=tuple(VARIANT_ORDER), arch=tuple(ARCHS))
    merged = {**defaults, **parameters}
    for name in list(columns):     # more: the readings' own parameters, each a set of runs of the preset
        lists = [merged.get(f"{name}s")] + list(matrix.get(f"{name}s", [])) + [m.get(f"{name}s") for m in more]
        values = [v for values in lists if isinstance(values, (list, tuple)) for v in values]
        if values:
            columns[name] = tuple(dict.fromkeys([*values, *([MODEL_DEFAULTS[name]] if name in MODEL_DEFAULTS else [])]))
    return columns


def _same(a, b) -> bool:
    """Equal as the scorecard compares them (tidy.matches): numbers within float rounding, True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _check_where(at: str, key: str, where: dict, columns: dict) -> None:
    for column, value in where.items():
        if column not in columns:
            raise ConfigError(f"{at}: {key} names column {column!r}, which no run of this notebook has"
                              f"{did_you_mean(column, columns)}; valid columns: {listing(sorted(columns))}")
        valid = columns[column]
        if valid is not None and not any(_same(value, v) for v in valid):
            raise ConfigError(f"{at}: {key}: {column}={value!r} is not a value this preset's runs have; "
                              f"choose one of {listing(valid)}{did_you_mean(value, valid)}")
        try:
            check_parameters({column: value})
        except ValueError as exc:
            raise ConfigError(f"{at}: {key}: {exc}") from None


def _check_figures(where: str, figures, columns: dict | None = None) -> list[dict]:
    """A preset's published figures (the reproduction scorecard's rows): keys, metrics and values; with
    `columns` (where_columns), the columns and values their where/versus name."""
    if figures is None:
        return []
    if not isinstance(figures, list):
        raise ConfigError(f"{where}: published must be a list of figures")
    for i, figure in enumerate(figures):
        at = f"{where}: published[{i}]"
        if not isinstance(figure, dict):
            raise ConfigError(f"{at}: expected a mapping with keys {listing(FIGURE_KEYS)}")
        unknown = [k for k in figure if k not in FIGURE_KEYS]
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {listing(unknown)}; valid keys: {listing(FIGURE_KEYS)}")
        for key in ("figure", "value", "metric"):
            if key not in figure:
                raise ConfigError(f"{at}: {key} is required")
        if figure["metric"] not in METRICS:
            raise ConfigError(f"{at}: metric={figure['metric']!r} is not valid; choose one of {listing(METRICS)}"
                              f"{did_you_mean(figure['metric'], METRICS)}")
        numbers = ["value"] + [k for k in ("reference", "rounded") if k in figure]
        for key in numbers:
            value = figure[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"{at}: {key}={value!r} is not valid; expected a finite number >= 0")
            if figure["metric"].endswith("_acc") and value > 1:
                hint = f" ({value:g} % is {value / 100:g})" if value <= 100 else ""
                raise ConfigError(f"{at}: {key}={value!r} is not valid for {figure['metric']}: accuracies are "
                                  f"fractions in [0, 1]{hint}")
        ratio = figure["metric"] in RATIO_METRICS
        if ratio != ("reference" in figure):
            raise ConfigError(f"{at}: metric {figure['metric']} " + (
                "needs reference (the published value of the variant it is divided by)" if ratio else
                "takes no reference (only time_ratio and forward_ratio do)"))
        for key in ("where", "versus"):
            if not isinstance(figure.get(key, {}), dict):
                raise ConfigError(f"{at}: {key} must map column names to values")
            if columns is not None:
                _check_where(at, key, figure.get(key, {}), columns)
        if figure["metric"] == "time_ratio" and "versus" not in figure:
            raise ConfigError(f"{at}: metric time_ratio needs versus (the variant it is divided by)")
        if "timing" in figure and (figure["metric"] != "time_ratio" or figure["timing"] not in TIMING_KINDS):
            raise ConfigError(f"{at}: timing={figure['timing']!r} is not valid; only a time_ratio figure takes "
                              f"it, one of {listing(TIMING_KINDS)}")
        epoch = figure.get("epoch", "final")
        if epoch not in ("final", "best") and not (isinstance(epoch, int) and not isinstance(epoch, bool)
                                                   and epoch >= 1):
            raise ConfigError(f"{at}: epoch={epoch!r} is not valid; expected 'final', 'best' or an epoch "
                              f"number >= 1")
    return figures

