"""The LeNet-5 family's choices and the optimizers' hyperparameter rules, without torch.

Shared by the torch side (models, optim) and the NumPy reference (numpy_ref), so both accept the same
arguments, fill in the same defaults and raise the same errors.
"""
from __future__ import annotations

import math

from lenet_lib.base.checks import check_choice, check_range

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10")        # data.DATASETS describes each
# (x-mean)/std; x-mean (R2's NumPy); x in [0, 1] (ToTensor alone); raw pixel values 0..255 (R4's "[0,255]")
NORMALIZATIONS = ("standard", "center", "unit", "raw")
PRECISIONS = ("fp32", "bf16", "tf32")
ACTIVATION_NAMES = ("relu", "tanh", "sigmoid")
POOL_NAMES = ("max", "avg")
BN_POSITIONS = ("before_act", "after_act", "after_pool")
BN_LAYERS = ("c1", "conv")          # BN after c1 only (R1, R2, R3) or after both convs (R4)
DROPOUT_AT = ("f6", "c5", "c5_f6")  # FC dropout after f6 only (R1, R2), after c5 only, or after both
PADDINGS = ("auto", "same", "valid")
INPUT_SIZES = (28, 32)              # a dataset's own size, or 28x28 digits padded / resized to 32x32
RESIZE_MODES = ("pad", "interpolate")   # LeCun's zero padding to 32x32, or R2's Resize(32)
ARCHS = ("lenet5", "mlp")          # LeNet-5 and the MLP baseline (R5), in torch and in NumPy
DROPOUT_SITES = ("fc", "conv")      # the notebooks' dropout in the FC part (R1, R4) or after c3 (R3)
TIMING_KINDS = ("epochs", "steps")   # a time figure's measurement: whole epochs (the reports' kind) or steps
BATCHINGS = ("shuffle", "contiguous")   # NumPy training: epoch_order's batches, or R2's contiguous ones
# R2 part I's code as printed (core/r2_printed.py) beside torch's: initialisation, update rules, the
# gradient's scale (batch mean, or R2's batch sum), where train accuracy is measured, the training set's order
INITS = ("torch", "r2_printed")
OPTIMIZER_RULES = ("torch", "r2_printed")
HYPERPARAMETER_SOURCES = ("default", "r2_printed")   # DEFAULT_LR and momentum, or R2's printed rates
GRAD_SCALES = ("mean", "sum")
TRAIN_ACC_ON = ("running", "full_train")   # running over the epoch's batches, or the whole training set after it
TRAIN_ORDERS = ("shuffled", "file")        # the training set in split_seed's order, or the dataset file's
LOSSES = ("cross_entropy", "r2_double_softmax")   # softmax cross-entropy, or R2's printed loss step (r2_printed)
R2_PRINTED_OPTIMIZERS = ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam")   # R2 l.550-709

# The one home of the LeNet-5 family's defaults: core.models.build_lenet5, numpy_ref.net.build_lenet5 and
# core.specs.TrainSpec take theirs from here; notebooks' parameters cells state them again only where they
# say why they differ (tests/test_defaults.py).
MODEL_DEFAULTS = {"activation": "relu", "fc_activation": None, "pool": "max", "bn": False, "bn_position": "after_act",
                  "bn_layers": "c1", "dropout": 0.0, "dropout_at": "f6", "conv_dropout": 0.0, "c3_table": False,
                  "padding": "auto"}

# LeCun 1998, table I: which of the 6 S2 maps feed each of the 16 C3 maps.
C3_TABLE = [
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
]


def lenet5_geometry(in_channels: int, input_size: int, activation: str, fc_activation: str | None, pool: str,
                    bn_position: str, bn_layers: str, dropout: float, dropout_at: str, conv_dropout: float,
                    padding: str) -> tuple[str, int, int]:
    """Check a LeNet-5's arguments; return (fc_activation, c1 padding in pixels, side of s4's maps).

    padding "auto" keeps the classic geometry: a 28x28 input gets "same" padding in c1 (as if padded to
    32x32), a 32x32 input none. "valid" on 28x28 gives R2's NumPy model (16*4*4 inputs to c5).
    """
    check_choice("in_channels", in_channels, (1, 3))
    check_choice("input_size", input_size, INPUT_SIZES)
    check_choice("activation", activation, ACTIVATION_NAMES)
    fc_activation = fc_activation or activation
    check_choice("fc_activation", fc_activation, ACTIVATION_NAMES)
    check_choice("pool", pool, POOL_NAMES)
    check_choice("bn_position", bn_position, BN_POSITIONS)
    check_choice("bn_layers", bn_layers, BN_LAYERS)
    check_choice("dropout_at", dropout_at, DROPOUT_AT)
    check_choice("padding", padding, PADDINGS)
    check_range("dropout", dropout, 0.0, 1.0, hi_open=True)
    check_range("conv_dropout", conv_dropout, 0.0, 1.0, hi_open=True)
    if padding == "auto":
        padding = "same" if input_size == 28 else "valid"
    c1_pad = 2 if padding == "same" else 0
    side = ((input_size + 2 * c1_pad - 4) // 2 - 4) // 2        # after c1, s2, c3, s4
    return fc_activation, c1_pad, side


def diverged(loss: float, num_classes: int = 10) -> bool:
    """A training loss that is NaN, infinite, or a hundred times that of a uniform guess (ln classes):
    a network that far from learning has blown up (lr 1e3 with full-batch GD reaches 1e21)."""
    return not math.isfinite(loss) or loss > DIVERGED_LOSS_FACTOR * math.log(num_classes)


DIVERGED_LOSS_FACTOR = 100


# Optimizers: default learning rate; momentum for the SGD family (plain sgd/gd none unless asked);
# the extra arguments each accepts, with torch.optim's defaults.
DEFAULT_LR = {"gd": 0.1, "sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.01, "adadelta": 1.0,
              "rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_MOMENTUM = {"gd": 0.0, "sgd": 0.0, "momentum": 0.9, "nesterov": 0.9}
EXTRA_DEFAULTS = {"adam": {"betas": (0.9, 0.999), "eps": 1e-8}, "adamw": {"betas": (0.9, 0.999), "eps": 1e-8},
                  "rmsprop": {"alpha": 0.99, "eps": 1e-8},
                  "adagrad": {"eps": 1e-10, "initial_accumulator_value": 0.0},   # TF1's AdaGrad starts at 0.1
                  "adadelta": {"rho": 0.9, "eps": 1e-6}}
OPTIMIZER_NAMES = tuple(DEFAULT_LR)


def resolve_hyperparameters(name: str, lr: float | None = None, momentum: float | None = None,
                            weight_decay: float = 0.0, **extra) -> dict:
    """Validated, complete hyperparameters for optimizer `name` (defaults filled in).

    Raises ValueError naming the bad value and the valid ones; nothing is built.
    """
    check_choice("optimizer", name, OPTIMIZER_NAMES)
    lr = DEFAULT_LR[name] if lr is None else lr
    check_range("lr", lr, 0.0, lo_open=True)
    check_range("weight_decay", weight_decay, 0.0)
    if name in DEFAULT_MOMENTUM:
        momentum = DEFAULT_MOMENTUM[name] if momentum is None else momentum
        check_range("momentum", momentum, 0.0, 1.0, hi_open=True)
        if name == "nesterov" and momentum == 0:
            raise ValueError("momentum=0 is not valid for nesterov; expected a number in (0, 1)")
    elif momentum not in (None, 0, 0.0):
        raise ValueError(f"momentum={momentum!r} is not valid for optimizer {name!r}; "
                         f"only {sorted(DEFAULT_MOMENTUM)} take momentum")
    else:
        momentum = 0.0 if name == "rmsprop" else None
    allowed = tuple(EXTRA_DEFAULTS.get(name, {}))
    unknown = set(extra) - set(allowed)
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for optimizer {name!r}; valid: "
                         f"{['lr', 'momentum', 'weight_decay', *allowed]}")
    if "initial_accumulator_value" in extra:
        check_range("initial_accumulator_value", extra["initial_accumulator_value"], 0.0)
    hp = {"lr": float(lr), "weight_decay": float(weight_decay), **extra}
    if momentum is not None:
        hp["momentum"] = float(momentum)
    return hp
