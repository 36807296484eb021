"""accelerate(model): a torch.nn model's faster form for training on CPU, sharing its parameters.

Where the pieces live: conv.py (c1 and c3), pool.py (max-pool, ReLU + max-pool), fused.py (conv tails,
BatchNorm, dropout), one_node.py (a whole network as one autograd node), csrc/ (the C kernels). What each
buys, measured, is in docs/speed.md; the private torch APIs they use are in README.md beside this file.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lenet_lib.fast.conv import Conv2d, MaskedConv2d
from lenet_lib.fast.fused import ACTIVATIONS, BatchNorm, ConvTail, Dropout, fusable_bn
from lenet_lib.fast.one_node import OneNodeSequential
from lenet_lib.fast.pool import MaxPool2d, ReLUMaxPool2d, is_2x2


def _is_avg_2x2(pool: nn.Module) -> bool:
    return (type(pool) is nn.AvgPool2d and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0)) and not pool.ceil_mode and pool.divisor_override is None)


def _tail_at(children: list[tuple[str, nn.Module]], i: int) -> int:
    """How many layers from i on make a tail that fused.ConvTail computes (0: none):
    [BatchNorm] activation [BatchNorm] [dropout] 2x2 max or average pool, one BatchNorm at most."""
    layers = [layer for _, layer in children[i:i + 5]]
    j = 0
    bn_before = j < len(layers) and fusable_bn(layers[j])
    j += bn_before
    if j >= len(layers) or type(layers[j]) not in ACTIVATIONS or (bn_before and type(layers[j]) is not nn.ReLU):
        return 0
    j += 1
    j += not bn_before and j < len(layers) and fusable_bn(layers[j])
    j += j < len(layers) and type(layers[j]) is nn.Dropout
    return j + 1 if j < len(layers) and (is_2x2(layers[j]) or _is_avg_2x2(layers[j])) else 0


def fuse_relu_max_pool(model: nn.Module) -> nn.Module:
    """model for training on CPU: each conv layer's tail as one layer, each other dropout drawing faster,
    each other BatchNorm2d (R2 part II's, after the pool) through the C kernels (fused.BatchNorm).

    A tail is [BatchNorm] activation [BatchNorm] [dropout] then a 2x2 max or average pool (fused.ConvTail;
    a ReLU right before a max-pool alone: ReLUMaxPool2d). Returns a new nn.Sequential holding model's own
    layers (so its parameters, buffers and training flags): the pool's name holds the fused layer, the
    other names of the tail an Identity; the same numbers (BatchNorm's gradients to float rounding).
    model itself keeps its layers, so feature maps by name (forward_features) still see each one.
    Anything else (not a Sequential, nothing to fuse) comes back as model.
    """
    if not isinstance(model, nn.Sequential):
        return model
    layers, fused, children = [], False, list(model.named_children())
    i = 0
    while i < len(children):
        name, layer = children[i]
        count = _tail_at(children, i)
        if count:
            run = [child for _, child in children[i:i + count]]
            one = ReLUMaxPool2d() if count == 2 and type(run[0]) is nn.ReLU and is_2x2(run[1]) else ConvTail(run)
            layers += [(n, one if k == count - 1 else nn.Identity()) for k, (n, _) in enumerate(children[i:i + count])]
            fused, i = True, i + count
            continue
        layers.append((name, Dropout(layer) if type(layer) is nn.Dropout else BatchNorm(layer) if fusable_bn(layer)
                       else layer))
        fused |= type(layer) is nn.Dropout or fusable_bn(layer)
        i += 1
    return OneNodeSequential(OrderedDict(layers)) if fused else model


def _as(cls: type, layer: nn.Module) -> nn.Module:
    """layer under class cls: the same parameters, buffers, settings and hooks (the same dicts), cls's forward."""
    twin = cls.__new__(cls)
    twin.__dict__.update(layer.__dict__)
    return twin


def _faster(layer: nn.Module) -> nn.Module:
    """layer's fast form: nn.Conv2d -> Conv2d, a masked Conv2d (LeCun's sparse c3: a `mask` buffer
    multiplied into the weight) -> MaskedConv2d, nn.MaxPool2d -> MaxPool2d; any other layer itself."""
    if type(layer) is nn.Conv2d:
        return _as(Conv2d, layer)
    if isinstance(layer, nn.Conv2d) and isinstance(layer._buffers.get("mask"), torch.Tensor):
        return _as(MaskedConv2d, layer)
    if type(layer) is nn.MaxPool2d:
        return _as(MaxPool2d, layer)
    return layer


def fast_layers(model: nn.Module) -> nn.Module:
    """model's convolutions and max-pools as this folder's layers (_faster), nothing fused: a new
    nn.Sequential sharing model's parameters; model itself where nothing changes or it is no nn.Sequential."""
    if not isinstance(model, nn.Sequential):
        return model
    layers = [(name, _faster(layer)) for name, layer in model.named_children()]
    if all(fast is layer for (_, fast), layer in zip(layers, model.children())):
        return model
    return nn.Sequential(OrderedDict(layers))


def accelerate(model: nn.Module) -> nn.Module:
    """The network lenet_lib trains `model` with on CPU: the same numbers as model (float rounding where
    BatchNorm or the C convolutions sum in another order), less time.

    model's convolutions and max-pools run through this folder's layers (fast_layers), its conv tails
    fused (fuse_relu_max_pool). The result shares model's parameters and buffers, so training it trains
    model; model itself is left as built (its state_dict, names and layers unchanged). Anything but an
    nn.Sequential, or one with nothing to speed up (the MLP), comes back as model.
    """
    net = fuse_relu_max_pool(fast_layers(model))
    # the twins share model's state through nn.Module's instance dicts (_as): where they do not, torch's layers
    if [id(p) for p in net.parameters()] != [id(p) for p in model.parameters()] or \
            [id(b) for b in net.buffers()] != [id(b) for b in model.buffers()]:
        return model
    return net
