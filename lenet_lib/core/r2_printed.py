"""R2 part I's NumPy code as printed (R2 l.187-795), in torch: its initialisation, its optimizers' update
rules with their printed hyperparameters, its loss step (a softmax taken twice) and its batches (one
contiguous slice at a random start).

Where the printed code cannot run (GD's step indexes a list, RMSprop and Adam unpack a (w, b) pair from
one array, AdaGrad is built from the loss value and re-built every iteration), the rule here is the
nearest one that runs; each says so on its line.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lenet_lib.base.checks import check_choice
from lenet_lib.base.choices import R2_PRINTED_OPTIMIZERS

# name -> (update rule, its printed hyperparameters); rates as set in R2 l.738-744 and l.755-756
PRINTED = {
    # R2 l.741; its step `val -= lr * self.parameters` (l.588) cannot run: read as a plain gradient step
    "gd": ("sgd", {"lr": 1e-3, "reg": 0.0}),
    "sgd": ("sgd", {"lr": 1e-4, "reg": 0.0}),                          # R2 l.738, rule l.558-561
    "momentum": ("momentum", {"lr": 1e-4, "rho": 0.8, "reg": 3e-5}),   # R2 l.739-740, rule l.573-578
    # R2 l.742-743: the moments are computed but the step uses the raw gradient (l.662-663): SGD at 0.01
    "adam": ("sgd", {"lr": 1e-2, "reg": 0.0}),
    "rmsprop": ("rmsprop", {"lr": 1e-3, "beta": 0.9, "eps": 1e-8}),    # R2 l.744 ("le-8"), rule l.606-612
    # R2 l.755-756, rule l.706-708; the printed step zeroes its sum on every call (l.696) and the optimizer
    # is re-built every iteration (l.755), which cannot run (l.705 calls the loss value): read as AdaGrad's
    # sum over the whole training
    "adagrad": ("adagrad", {"lr": 1e-2, "fudge": 1e-6}),
}

assert set(PRINTED) == set(R2_PRINTED_OPTIMIZERS)   # the names validate.py checks before a run


def printed_hyperparameters(name: str) -> dict:
    """The printed learning rate (and momentum for "momentum"), in TrainSpec's names: {lr, momentum?}."""
    check_choice("optimizer", name, tuple(PRINTED))
    rule, hp = PRINTED[name]
    return {"lr": hp["lr"], **({"momentum": hp["rho"]} if rule == "momentum" else {})}


class PrintedOptimizer(torch.optim.Optimizer):
    """One of R2's printed update rules, per parameter tensor (p: parameter, g: its gradient):

    sgd:      p -= lr * g + reg * p
    momentum: v = rho * v + (1 - rho) * g;  p -= lr * v + reg * p   (reg: decoupled, per step)
    rmsprop:  s = beta * s + (1 - beta) * g^2;  p -= lr * g / (sqrt(s) + eps)
    adagrad:  s += g^2;  p -= lr * g / (fudge + sqrt(s))
    """
    RULES = ("sgd", "momentum", "rmsprop", "adagrad")

    def __init__(self, params, rule: str, lr: float, rho: float = 0.0, reg: float = 0.0, beta: float = 0.9,
                 eps: float = 1e-8, fudge: float = 1e-6):
        check_choice("rule", rule, self.RULES)
        super().__init__(params, {"rule": rule, "lr": lr, "rho": rho, "reg": reg, "beta": beta, "eps": eps,
                                  "fudge": fudge})

    @torch.no_grad()
    def step(self, closure=None):
        # Public per-tensor ops only (torch's private _foreach_ calls were ~3x faster here; see issue 36).
        for group in self.param_groups:
            rule, lr = group["rule"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["reg"]:    # p -= reg * p first: the same step as p -= lr * update + reg * p (old p)
                    p.mul_(1.0 - group["reg"])
                if rule == "sgd":
                    p.add_(g, alpha=-lr)
                    continue
                state = self.state[p].setdefault("buf", torch.zeros_like(p))
                if rule == "momentum":
                    state.mul_(group["rho"]).add_(g, alpha=1.0 - group["rho"])
                    p.add_(state, alpha=-lr)
                    continue
                if rule == "rmsprop":
                    state.mul_(group["beta"]).addcmul_(g, g, value=1.0 - group["beta"])
                else:
                    state.addcmul_(g, g)
                denominator = state.sqrt().add_(group["eps"] if rule == "rmsprop" else group["fudge"])
                p.addcdiv_(g, denominator, value=-lr)
        return None


def make_printed_optimizer(name: str, params, lr: float | None = None,
                           momentum: float | None = None) -> PrintedOptimizer:
    """R2's printed optimizer for `name`; lr and momentum (rho) replace the printed ones where given."""
    check_choice("optimizer", name, tuple(PRINTED))
    rule, hp = PRINTED[name]
    hp = dict(hp)
    if lr is not None:
        hp["lr"] = lr
    if momentum is not None and rule == "momentum":
        hp["rho"] = momentum
    return PrintedOptimizer(params, rule, **hp)


def double_softmax_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float | None = None):
    """R2's printed loss step on a batch, backward included; returns (logits, loss) as train.loss_and_backward.

    The printed network ends in a softmax (l.523), the loss takes a softmax of that output again
    (l.486-487) and hands back prob - onehot as the gradient of the last layer's output (l.490-491, l.527),
    the Softmax layer's backward being commented out (l.526): neither softmax's Jacobian is applied. That
    gradient is (prob - onehot) / N here, times `scale` as for the mean loss (scale N: R2's batch sum).
    The loss is the printed NLL of prob, the batch mean (l.467-476; its 500 for a zero probability cannot
    arise, prob > 0).
    """
    logits = net(x)
    with torch.no_grad():
        prob = torch.softmax(torch.softmax(logits.float(), 1), 1)
        loss = -prob.gather(1, y[:, None]).log().mean()
        grad = prob.index_put_((torch.arange(len(y), device=y.device), y), torch.tensor(-1.0), accumulate=True)
        grad *= (1.0 if scale is None else scale) / len(y)
    logits.backward(grad.to(logits.dtype))
    return logits.detach(), loss


def printed_init_(model: nn.Module) -> nn.Module:
    """R2's printed initialisation, from the global RNG: weights N(0, std sqrt(2 / fan_in)) with fan_in the
    input features of a fully connected layer (l.277) and the input channels of a convolution (l.374-375,
    not channels x kernel area), biases N(0, 1) (l.279, l.379). np.random.normal's second argument is the
    standard deviation."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels
            elif isinstance(module, nn.Linear):
                fan_in = module.in_features
            else:
                continue
            module.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                module.bias.normal_(0.0, 1.0)
    return model


def slice_starts(n: int, batch_size: int, iterations: int, seed: int) -> torch.Tensor:
    """Start of each iteration's batch, x[start:start + batch_size], as R2's get_batch draws it (l.252-255):
    uniform over 1 .. n - batch_size inclusive (random.randint's ends; image 0 is never drawn). Seeded by
    `seed` alone, on the CPU."""
    if n <= batch_size:
        raise ValueError(f"batch_size={batch_size} is not valid for contiguous slices of {n} training images; "
                         f"expected fewer than {n}")
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + 999_983)
    return torch.randint(1, n - batch_size + 1, (iterations,), generator=generator)
