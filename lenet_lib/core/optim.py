"""Optimizers by name, with one meaning for each hyperparameter (torch.optim's)."""
from __future__ import annotations

import torch

from lenet_lib.base.choices import DEFAULT_LR, resolve_hyperparameters

# name -> (torch class, keyword arguments fixed by the name); default rates live in choices.DEFAULT_LR
_TORCH = {
    "gd": (torch.optim.SGD, {}),            # full batch: one step per epoch (see train.py)
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {}),
    "nesterov": (torch.optim.SGD, {"nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "adadelta": (torch.optim.Adadelta, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
}
# name -> (torch class, default learning rate, fixed keyword arguments)
OPTIMIZERS = {name: (cls, DEFAULT_LR[name], fixed) for name, (cls, fixed) in _TORCH.items()}
# torch's fused CPU kernels (public: fused=True) update every parameter in one pass, the same numbers to float
# rounding; torch has no fused RMSprop or Adadelta. docs/speed.md has the timings.
FUSED = frozenset({"gd", "sgd", "momentum", "nesterov", "adagrad", "adam", "adamw"})


def make_optimizer(name: str, params, *, fused: bool = False, **hyperparameters) -> torch.optim.Optimizer:
    """torch optimizer for `name`, e.g. make_optimizer("momentum", model.parameters(), lr=0.05).

    fused=True: torch's fused kernel where it has one for `name` (FUSED); lenet_lib's training asks for it on
    CPU (its fast path then steps it lean: lenet_lib.fast.optim). Without it, torch's default, as the reports ran.
    """
    hp = resolve_hyperparameters(name, **hyperparameters)
    cls, _, fixed = OPTIMIZERS[name]
    if fused and name in FUSED:
        return cls(params, **hp, **fixed, fused=True)
    return cls(params, **hp, **fixed)
