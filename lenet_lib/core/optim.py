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
# torch's fused CPU kernels update every parameter in one pass instead of a few ops per tensor. LeNet-5's
# 61,706 parameters, one thread: Adam 241 -> 68 us per step, AdamW 249 -> 69, Adagrad 181 -> 58, SGD with
# momentum 92 -> 30, plain SGD 51 -> 26; the same numbers to float rounding (1-2e-7 relative after 50
# steps). That is 2 % of a training step at batch 128 with SGD, 10 % at batch 16 with Adam (R5). torch
# has no fused RMSprop or Adadelta: those keep the per-tensor loop.
FUSED = frozenset({"gd", "sgd", "momentum", "nesterov", "adagrad", "adam", "adamw"})


def make_optimizer(name: str, params, *, fused: bool = False, **hyperparameters) -> torch.optim.Optimizer:
    """torch optimizer for `name`, e.g. make_optimizer("momentum", model.parameters(), lr=0.05).

    fused=True: torch's fused kernel where it has one for `name` (FUSED); lenet_lib's training asks for it
    on CPU. Without it, torch's default, as the reports ran.
    """
    hp = resolve_hyperparameters(name, **hyperparameters)
    cls, _, fixed = OPTIMIZERS[name]
    return cls(params, **hp, **fixed, **({"fused": True} if fused and name in FUSED else {}))
