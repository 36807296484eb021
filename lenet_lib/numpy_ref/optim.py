"""NumPy optimizers with torch.optim's hyperparameter meanings and update formulas.

R2's NumPy optimizers updated the wrong arrays. Here an optimizer holds a dict {name: array} of the
network's own parameter arrays (Sequential.parameters()) and updates each one in place; its state
(momentum buffer, squared-gradient averages, step count) lives in `state[name]`, one dict per parameter,
and step() takes gradients under the same names and refuses any other set.
"""
from __future__ import annotations

import numpy as np

from lenet_lib.base.choices import resolve_hyperparameters


class Optimizer:
    """Base: per-parameter state, in-place updates of the arrays it was given."""
    decoupled_decay = False     # AdamW shrinks the weights instead of adding L2 to the gradient

    def __init__(self, params: dict[str, np.ndarray], lr: float, weight_decay: float = 0.0):
        self.params = dict(params)
        self.lr, self.weight_decay = lr, weight_decay
        self.state: dict[str, dict] = {name: {} for name in self.params}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        if set(grads) != set(self.params):
            raise ValueError(f"gradients for {sorted(set(grads) ^ set(self.params))} do not match the parameters")
        for name, p in self.params.items():
            g = grads[name]
            if self.weight_decay and self.decoupled_decay:
                p *= 1 - self.lr * self.weight_decay
            elif self.weight_decay:         # L2 added to the gradient, as torch
                g = g + self.weight_decay * p
            self.update(p, g, self.state[name])

    def update(self, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0): buf = m*buf + g (buf = g at the first step); nesterov uses g + m*buf."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov

    def update(self, p, g, state):
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += g
            buf = state["momentum_buffer"]
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adagrad(Optimizer):
    """torch.optim.Adagrad (no lr decay): p -= lr * g / (sqrt(sum g^2) + eps), the sum starting at
    initial_accumulator_value."""

    def __init__(self, params, lr, weight_decay=0.0, eps=1e-10, initial_accumulator_value=0.0):
        super().__init__(params, lr, weight_decay)
        self.eps, self.initial = eps, initial_accumulator_value

    def update(self, p, g, state):
        state.setdefault("sum", np.full_like(p, self.initial))
        state["sum"] += g * g
        p -= self.lr * g / (np.sqrt(state["sum"]) + self.eps)


class Adadelta(Optimizer):
    """torch.optim.Adadelta: running averages of g^2 and of the squared updates, scaled by lr."""

    def __init__(self, params, lr, weight_decay=0.0, rho=0.9, eps=1e-6):
        super().__init__(params, lr, weight_decay)
        self.rho, self.eps = rho, eps

    def update(self, p, g, state):
        sq, acc = state.setdefault("square_avg", np.zeros_like(p)), state.setdefault("acc_delta", np.zeros_like(p))
        sq *= self.rho
        sq += (1 - self.rho) * g * g
        delta = np.sqrt(acc + self.eps) / np.sqrt(sq + self.eps) * g
        acc *= self.rho
        acc += (1 - self.rho) * delta * delta
        p -= self.lr * delta


class RMSprop(Optimizer):
    """torch.optim.RMSprop (not centered): avg = alpha*avg + (1-alpha)*g^2; p -= lr * g / (sqrt(avg) + eps)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, alpha=0.99, eps=1e-8):
        super().__init__(params, lr, weight_decay)
        self.momentum, self.alpha, self.eps = momentum, alpha, eps

    def update(self, p, g, state):
        sq = state.setdefault("square_avg", np.zeros_like(p))
        sq *= self.alpha
        sq += (1 - self.alpha) * g * g
        step = g / (np.sqrt(sq) + self.eps)
        if self.momentum:
            buf = state.setdefault("momentum_buffer", np.zeros_like(p))
            buf *= self.momentum
            buf += step
            step = buf
        p -= self.lr * step


class Adam(Optimizer):
    """torch.optim.Adam (no amsgrad): bias-corrected first and second moments."""

    def __init__(self, params, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps = tuple(betas), eps

    def update(self, p, g, state):
        b1, b2 = self.betas
        state["step"] = state.get("step", 0) + 1
        m, v = state.setdefault("exp_avg", np.zeros_like(p)), state.setdefault("exp_avg_sq", np.zeros_like(p))
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        correction1, correction2 = 1 - b1 ** state["step"], 1 - b2 ** state["step"]
        p -= (self.lr / correction1) * m / (np.sqrt(v) / np.sqrt(correction2) + self.eps)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay, p *= 1 - lr*wd, then Adam without L2 in the gradient."""
    decoupled_decay = True


CLASSES = {"gd": SGD, "sgd": SGD, "momentum": SGD, "nesterov": SGD, "adagrad": Adagrad, "adadelta": Adadelta,
           "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, params: dict[str, np.ndarray], **hyperparameters) -> Optimizer:
    """NumPy optimizer `name` over params (name -> array), e.g. make_optimizer("adam", net.parameters())."""
    hp = resolve_hyperparameters(name, **hyperparameters)
    if name == "nesterov":
        hp["nesterov"] = True
    return CLASSES[name](params, **hp)
