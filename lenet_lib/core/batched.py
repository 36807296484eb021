"""K models of one shape as one network: the pieces that ensemble.train_many trains.

Layout. Convolutional activations are (B, K*C, H, W): model k owns channels k*C .. (k+1)*C-1, so a
convolution with groups=K is K independent convolutions, BatchNorm over K*C channels keeps per-model
statistics, and activations and pooling (per channel) need no change. Fully connected activations are
(K, B, F) and a Linear is one batched matmul (baddbmm). Flatten moves from the first layout to the second.

Why this and not torch.func (stack_module_state + functional_call + vmap): vmap was slower on CPU
(bench/ensemble.py step_designs; figures in docs/speed.md). vmap's batching rule for conv2d lowers to the same grouped convolution, so on GPU it can at best tie;
and vmap draws dropout masks for all models at once (randomness="different"), so a model's masks could
not be the ones it gets when trained alone. Here they come from each model's own RNG stream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lenet_lib.core.optim import make_optimizer


def signature(model: nn.Sequential) -> tuple:
    """What must match for models to share one stacked network: every layer but dropout, with its
    configuration (shapes, padding, activation, pooling, BatchNorm). Dropout rates may differ."""
    return tuple((name, repr(layer)) for name, layer in model.named_children()
                 if not isinstance(layer, nn.Dropout))


def dropout_after(model: nn.Sequential) -> dict[str, float]:
    """{name of the layer a dropout follows: its p}, e.g. {"f6_act": 0.5}."""
    rates, previous = {}, None
    for name, layer in model.named_children():
        if isinstance(layer, nn.Dropout):
            if previous is None or previous in rates:
                raise TypeError(f"dropout layer {name!r} must follow a layer that is not dropout")
            rates[previous] = layer.p
        else:
            previous = name
    return rates


class StackedConv(nn.Module):
    """K Conv2d (or SparseConv2d, LeCun's C3 table) as one grouped convolution."""

    def __init__(self, convs: list[nn.Conv2d]):
        super().__init__()
        first = convs[0]
        if first.groups != 1 or first.padding_mode != "zeros":
            raise TypeError("only plain convolutions (groups=1, zero padding) can be stacked")
        self.weight = nn.Parameter(torch.stack([c.weight.detach() for c in convs]))   # K, out, in, kh, kw
        self.bias = nn.Parameter(torch.stack([c.bias.detach() for c in convs]))       # K, out
        self.register_buffer("mask", getattr(first, "mask", None))
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation

    def forward(self, x):
        w = self.weight if self.mask is None else self.weight * self.mask
        return F.conv2d(x, w.flatten(0, 1), self.bias.flatten(), self.stride, self.padding, self.dilation,
                        groups=w.shape[0])

    def copy_to(self, k: int, conv: nn.Conv2d) -> None:
        conv.weight.copy_(self.weight[k])
        conv.bias.copy_(self.bias[k])


class StackedBatchNorm(nn.Module):
    """K BatchNorm2d as one over K*C channels: statistics stay per model (per channel)."""

    def __init__(self, bns: list[nn.BatchNorm2d]):
        super().__init__()
        first = bns[0]
        if not (first.affine and first.track_running_stats and first.momentum is not None):
            raise TypeError("only affine BatchNorm2d with running statistics and a momentum can be stacked")
        self.weight = nn.Parameter(torch.stack([b.weight.detach() for b in bns]))    # K, C
        self.bias = nn.Parameter(torch.stack([b.bias.detach() for b in bns]))
        self.register_buffer("running_mean", torch.stack([b.running_mean for b in bns]))
        self.register_buffer("running_var", torch.stack([b.running_var for b in bns]))
        self.register_buffer("num_batches_tracked", first.num_batches_tracked.clone())
        self.momentum, self.eps = first.momentum, first.eps

    def forward(self, x):
        if self.training:
            self.num_batches_tracked += 1       # as nn.BatchNorm2d does (unused with a fixed momentum)
        # The flattened buffers are views: F.batch_norm's in-place running-statistics update lands here.
        return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.flatten(),
                            self.bias.flatten(), self.training, self.momentum, self.eps)

    def copy_to(self, k: int, bn: nn.BatchNorm2d) -> None:
        bn.weight.copy_(self.weight[k])
        bn.bias.copy_(self.bias[k])
        bn.running_mean.copy_(self.running_mean[k])
        bn.running_var.copy_(self.running_var[k])
        bn.num_batches_tracked.copy_(self.num_batches_tracked)


class StackedLinear(nn.Module):
    """K Linear layers as one batched matmul on (K, B, F) activations."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))  # K, out, in
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in linears]))      # K, out

    def forward(self, x):
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def copy_to(self, k: int, linear: nn.Linear) -> None:
        linear.weight.copy_(self.weight[k])
        linear.bias.copy_(self.bias[k])


class ToModelMajor(nn.Module):
    """Flatten: (B, K*C, H, W) -> (K, B, C*H*W), from the convolutional to the fully connected layout."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x.unflatten(1, (self.k, -1)).flatten(2).transpose(0, 1)


def _stack(layers: list[nn.Module], k: int) -> nn.Module:
    first = layers[0]
    if isinstance(first, nn.Conv2d):
        return StackedConv(layers)
    if isinstance(first, nn.BatchNorm2d):
        return StackedBatchNorm(layers)
    if isinstance(first, nn.Linear):
        return StackedLinear(layers)
    if isinstance(first, nn.Flatten):
        return ToModelMajor(k)
    if any(True for _ in first.parameters()) or any(True for _ in first.buffers()):
        raise TypeError(f"cannot stack layer {type(first).__name__}")
    return first      # activations and pooling hold no state and work per channel or per element


class StackedNet(nn.Module):
    """Models that share a signature() as one network: forward((B, K*C, H, W) input, masks) -> (K, B, classes).

    `masks` maps the name of a layer to the dropout noise (0 or 1/(1-p)) that multiplies its output, in
    that layer's layout; empty in evaluation.
    """

    def __init__(self, models: list[nn.Sequential], input_shape: tuple[int, ...]):
        super().__init__()
        self.k = len(models)
        children = [dict((n, m) for n, m in model.named_children() if not isinstance(m, nn.Dropout))
                    for model in models]
        self.layers = nn.ModuleDict({name: _stack([c[name] for c in children], self.k) for name in children[0]})
        rates = [dropout_after(model) for model in models]
        # Per dropout site: each model's p (0: that model has no dropout there) and one model's output shape.
        self.dropout = {}
        shapes, x = {}, torch.zeros(1, *input_shape)
        with torch.no_grad():
            for name, layer in models[0].eval().named_children():
                x = layer(x)
                shapes[name] = tuple(x.shape[1:])
        models[0].train()
        for name in self.layers:
            ps = [r.get(name, 0.0) for r in rates]
            if any(ps):
                self.dropout[name] = (ps, shapes[name])

    def forward(self, x, masks: dict[str, torch.Tensor]):
        for name, layer in self.layers.items():
            x = layer(x)
            if name in masks:
                x = x * masks[name]
        return x

    def copy_to(self, k: int, model: nn.Sequential) -> None:
        """Write model k's weights and BatchNorm buffers into `model` (built by train.build_for)."""
        with torch.no_grad():
            for name, layer in self.layers.items():
                if hasattr(layer, "copy_to"):
                    layer.copy_to(k, getattr(model, name))


def rng_state(device: torch.device) -> torch.Tensor:
    """The global RNG state that dropout on `device` draws from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class DropoutStreams:
    """Dropout masks per model, exactly as train() draws them.

    train() seeds the global RNG, builds the model, and from then on only dropout draws from that RNG:
    per batch, one F.dropout call per dropout layer, in layer order. Each model here keeps its own copy
    of that RNG state (taken right after its build), and its masks come from F.dropout itself on a
    tensor of ones of the same shape and dtype (bfloat16 under bf16 autocast, as dropout's input is
    there), so they are the same numbers on CPU and on CUDA. The price of exact masks: per step, K state
    swaps and K small dropout calls per site (on GPU, launch overhead that grows with K).
    """

    def __init__(self, sites: dict[str, tuple[list[float], tuple]], states: list[torch.Tensor], device,
                 dtype: torch.dtype = torch.float32):
        self.sites, self.states, self.device, self.dtype = sites, list(states), torch.device(device), dtype

    def draw(self, batch: int) -> dict[str, torch.Tensor]:
        if not self.sites:
            return {}
        per_model = {name: [] for name in self.sites}
        with torch.no_grad():
            for k, state in enumerate(self.states):
                set_rng_state(state, self.device)
                for name, (ps, shape) in self.sites.items():
                    ones = torch.ones(batch, *shape, device=self.device, dtype=self.dtype)
                    per_model[name].append(F.dropout(ones, ps[k], True) if ps[k] > 0 else ones)
                self.states[k] = rng_state(self.device)
        # Convolutional sites: (B, C, H, W) per model -> (B, K*C, H, W); fully connected: (K, B, F).
        return {name: torch.stack(m, 1).flatten(1, 2) if m[0].dim() == 4 else torch.stack(m)
                for name, m in per_model.items()}


class StackedOptimizer:
    """torch's own optimizer over the stacked parameters, each model with its own hyperparameters.

    The optimizer updates detached views (same storage) of the stacked parameters: one param group per
    run of consecutive models that share hyperparameters. So every model gets train()'s update rule,
    learning rate, momentum, weight decay and optimizer state, and models that share hyperparameters are
    updated as one tensor per layer (a few kernels per step on GPU instead of K times as many).
    """

    def __init__(self, name: str, net: nn.Module, hyperparameters: list[dict]):
        self.params = list(net.parameters())
        runs, start = [], 0
        for k in range(1, len(hyperparameters) + 1):
            if k == len(hyperparameters) or hyperparameters[k] != hyperparameters[start]:
                runs.append((start, k))
                start = k
        self.views, groups = [], []       # views: (stacked parameter, first model, end, view of them)
        for a, b in runs:
            views = [p.detach()[a:b] for p in self.params]
            self.views += [(p, a, b, v) for p, v in zip(self.params, views)]
            groups.append({"params": views, **hyperparameters[a]})
        # fused on CPU, as train() has it: the same update element by element as for one model alone
        self.optimizer = make_optimizer(name, groups, fused=self.params[0].device.type == "cpu",
                                        **hyperparameters[0])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, a, b, view in self.views:
            view.grad = None if p.grad is None else p.grad[a:b]
        self.optimizer.step()
