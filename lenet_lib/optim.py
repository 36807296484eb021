"""Optimizers by name, with one meaning for each hyperparameter (torch.optim's)."""
from __future__ import annotations

import torch

from .validate import check_choice, check_range

# name -> (torch class, default learning rate, fixed keyword arguments)
OPTIMIZERS = {
    "gd": (torch.optim.SGD, 0.1, {}),            # full batch: one step per epoch (see train.py)
    "sgd": (torch.optim.SGD, 0.05, {}),
    "momentum": (torch.optim.SGD, 0.05, {}),
    "nesterov": (torch.optim.SGD, 0.05, {"nesterov": True}),
    "adagrad": (torch.optim.Adagrad, 0.01, {}),
    "adadelta": (torch.optim.Adadelta, 1.0, {}),
    "rmsprop": (torch.optim.RMSprop, 1e-3, {}),
    "adam": (torch.optim.Adam, 1e-3, {}),
    "adamw": (torch.optim.AdamW, 1e-3, {}),
}
# Default momentum for the SGD family: plain sgd/gd have none unless asked; "momentum" and "nesterov" 0.9.
DEFAULT_MOMENTUM = {"gd": 0.0, "sgd": 0.0, "momentum": 0.9, "nesterov": 0.9}
EXTRA_ARGS = {"adam": ("betas", "eps"), "adamw": ("betas", "eps"), "rmsprop": ("alpha", "eps"),
              "adagrad": ("eps",), "adadelta": ("rho", "eps")}


def resolve_hyperparameters(name: str, lr: float | None = None, momentum: float | None = None,
                            weight_decay: float = 0.0, **extra) -> dict:
    """Validated, complete hyperparameters for optimizer `name` (defaults filled in).

    Raises ValueError naming the bad value and the valid ones; nothing is built.
    """
    check_choice("optimizer", name, tuple(OPTIMIZERS))
    lr = OPTIMIZERS[name][1] if lr is None else lr
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
    allowed = EXTRA_ARGS.get(name, ())
    unknown = set(extra) - set(allowed)
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for optimizer {name!r}; valid: "
                         f"{['lr', 'momentum', 'weight_decay', *allowed]}")
    hp = {"lr": float(lr), "weight_decay": float(weight_decay), **extra}
    if momentum is not None:
        hp["momentum"] = float(momentum)
    return hp


def make_optimizer(name: str, params, **hyperparameters) -> torch.optim.Optimizer:
    """torch optimizer for `name`, e.g. make_optimizer("momentum", model.parameters(), lr=0.05)."""
    hp = resolve_hyperparameters(name, **hyperparameters)
    cls, _, fixed = OPTIMIZERS[name]
    return cls(params, **hp, **fixed)
