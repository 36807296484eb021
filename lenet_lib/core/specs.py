"""TrainSpec: everything that shapes one model and its training, flat, validated on construction."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields, replace

import torch

from lenet_lib.core.models import ARCHS, MODEL_ARGS, build_model
from lenet_lib.core.optim import resolve_hyperparameters
from lenet_lib.core.r2_printed import PRINTED, printed_hyperparameters
from lenet_lib.base.checks import check_bool, check_choice, check_nonneg_int, check_positive_int
from lenet_lib.base.choices import GRAD_SCALES, INITS, LOSSES, MODEL_DEFAULTS, OPTIMIZER_RULES, TRAIN_ACC_ON


@dataclass(frozen=True)
class TrainSpec:
    """One model to train. Model fields follow models.build_lenet5; optimizer fields optim.make_optimizer."""
    arch: str = "lenet5"
    activation: str = MODEL_DEFAULTS["activation"]
    fc_activation: str | None = MODEL_DEFAULTS["fc_activation"]
    pool: str = MODEL_DEFAULTS["pool"]
    bn: bool = MODEL_DEFAULTS["bn"]
    bn_position: str = MODEL_DEFAULTS["bn_position"]
    bn_layers: str = MODEL_DEFAULTS["bn_layers"]
    dropout: float = MODEL_DEFAULTS["dropout"]
    dropout_at: str = MODEL_DEFAULTS["dropout_at"]
    conv_dropout: float = MODEL_DEFAULTS["conv_dropout"]
    c3_table: bool = MODEL_DEFAULTS["c3_table"]
    padding: str = MODEL_DEFAULTS["padding"]
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0     # adagrad only: torch's 0; TF1's AdaGrad starts at 0.1
    batch_size: int = 128
    epochs: int = 5
    seed: int = 0
    # R2 part I's code as printed (core/r2_printed.py) beside torch's; the defaults are torch's
    init: str = "torch"               # "r2_printed": R2's printed initialisation
    optimizer_rules: str = "torch"    # "r2_printed": R2's printed update rules, under the same names
    grad_scale: str = "mean"          # "sum": the batch's summed gradient (R2's backward has no 1/N)
    loss: str = "cross_entropy"       # "r2_double_softmax": R2's printed loss step (r2_printed.double_softmax_backward)
    train_acc_on: str = "running"     # "full_train": train loss and accuracy on the whole training set
    iterations: int = 0               # > 0: that many steps of one random contiguous slice each, over
                                      # `epochs` equal blocks (a row per block); 0: epochs over shuffled data
    fast: bool = True                 # False: torch's own layers and steps on CPU, as LENET_FAST=0 (rows: kernels)
    model_id: str = ""

    def __post_init__(self):
        # Fail here, before any data is loaded or any model trained; NumPy numbers become Python ones.
        check_choice("arch", self.arch, ARCHS)
        for name in ("bn", "c3_table", "fast"):
            check_bool(name, getattr(self, name))
            object.__setattr__(self, name, bool(getattr(self, name)))
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("epochs", self.epochs)
        check_nonneg_int("seed", self.seed)
        check_nonneg_int("iterations", self.iterations)
        for name in ("batch_size", "epochs", "seed", "iterations"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name, valid in (("init", INITS), ("optimizer_rules", OPTIMIZER_RULES), ("grad_scale", GRAD_SCALES),
                            ("loss", LOSSES), ("train_acc_on", TRAIN_ACC_ON)):
            check_choice(name, getattr(self, name), valid)
        if self.iterations % self.epochs:
            raise ValueError(f"iterations={self.iterations} is not valid with epochs={self.epochs}: the iterations "
                             f"are recorded in `epochs` equal blocks; expected a multiple of {self.epochs}")
        if self.optimizer_rules == "r2_printed":
            check_choice("optimizer (with optimizer_rules='r2_printed')", self.optimizer, tuple(PRINTED))
        if not isinstance(self.model_id, str):
            raise ValueError(f"model_id={self.model_id!r} is not valid; expected a string (or '' for the default)")
        self.hyperparameters()
        with torch.device("meta"):    # checks the arguments without drawing from the RNG
            build_model(self.arch, **self.model_kwargs())
        if not self.model_id:
            object.__setattr__(self, "model_id", f"{self.arch}-s{self.seed}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSpec":
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; valid: {valid}")
        return cls(**values)

    def model_kwargs(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_ARGS[self.arch]}

    def hyperparameters(self) -> dict:
        """Optimizer hyperparameters with defaults filled in (lr, weight_decay, momentum where it applies;
        AdaGrad's initial accumulator where it is not torch's 0)."""
        extra = {"initial_accumulator_value": self.initial_accumulator_value} if self.initial_accumulator_value else {}
        return resolve_hyperparameters(self.optimizer, self.lr, self.momentum, self.weight_decay, **extra)

    def columns(self) -> dict:
        """Flat configuration columns for tidy rows: every field, learning rate and momentum resolved."""
        row = asdict(self)
        del row["fast"]     # what ran is the `kernels` column (train.base_columns)
        hp = self.hyperparameters()
        if self.optimizer_rules == "r2_printed":
            hp = {**printed_hyperparameters(self.optimizer),
                  **{k: v for k, v in (("lr", self.lr), ("momentum", self.momentum)) if v is not None}}
        row["lr"] = hp["lr"]
        row["momentum"] = hp.get("momentum", float("nan"))
        row["fc_activation"] = self.fc_activation or self.activation
        return row


def expand_grid(grid: dict | None = None, **fixed) -> list[TrainSpec]:
    """One TrainSpec per combination of the lists in `grid`, each with the `fixed` values.

    model_id names the varying values, e.g. "bn=True,dropout=0.5,seed=2", so it is unique in the run.
    """
    grid = dict(grid or {})
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid[{name!r}]={values!r} is not valid; expected a non-empty list")
    overlap = sorted(set(grid) & set(fixed))
    if overlap:
        raise ValueError(f"parameter(s) {overlap} given both as grid and fixed values")
    specs = []
    for combo in itertools.product(*grid.values()):
        varying = dict(zip(grid, combo))
        model_id = ",".join(f"{k}={v}" for k, v in varying.items()) or "model"
        specs.append(TrainSpec.from_dict({**fixed, **varying, "model_id": model_id}))
    return specs


def with_values(spec: TrainSpec, **changes) -> TrainSpec:
    """A copy of spec with some fields changed (validated again)."""
    return replace(spec, **changes)
