"""Fused layers for training on CPU: a conv layer's whole tail as one layer, dropout and BatchNorm on their
own in C.

ConvTail runs [BatchNorm] activation [BatchNorm] [dropout] 2x2 pool through csrc/conv_tail.c: one C call
forward, one backward. Dropout applies torch's own mask through csrc/dropout.c. BatchNorm runs a BatchNorm2d
outside a tail through csrc/batch_norm.c. layers.fuse_relu_max_pool builds them from a model's own
layers; docs/speed.md says what each buys. Each layer's training pass is a pair of
functions (*_train_forward, *_train_backward): its autograd node calls them, and so does one_node, which
runs a whole fused network as one node.
Where the kernels cannot run (no compiler, not x86-64, LENET_C_KERNELS=0, inputs other than contiguous
float32 NCHW with even sides), the layers run the model's own modules one after another: torch's numbers.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from lenet_lib.fast import c_kernels

# csrc/conv_tail.c's flags
RELU, TANH, SIGMOID, BN_BEFORE, BN_AFTER, NOISE, AVG, BN_TRAIN = 1, 2, 4, 8, 16, 32, 64, 128
ACTIVATIONS = {nn.ReLU: RELU, nn.Tanh: TANH, nn.Sigmoid: SIGMOID}
BN_FIELDS = 4   # per channel: mean, invstd, alpha, beta


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """torch.empty for a kernel's output, which the kernel writes whole (sizes as arguments: ~1 us less)."""
    return torch.empty(*shape, dtype=dtype)


def tensor_fits_kernels(x: torch.Tensor) -> bool:
    """x is contiguous float32 on the CPU and the C kernels are loaded: what every kernel here needs (each
    layer adds its own shape rules)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and c_kernels.load() is not None


def _kernels_take(x: torch.Tensor, even_sides: bool = True) -> bool:
    """Contiguous float32 NCHW on CPU (with even height and width, for a 2x2 pool), and the C kernels loaded."""
    return (x.dim() == 4 and x.numel() > 0 and (not even_sides or (x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0))
            and tensor_fits_kernels(x))


def _bn_takes(bn: nn.BatchNorm2d, x: torch.Tensor) -> bool:
    """bn's parameters fit x: its channels and dtype."""
    return x.shape[1] == bn.num_features and bn.weight.dtype == x.dtype


# -- dropout ---------------------------------------------------------------------------------------

@functools.cache
def _scale(p: float) -> float:
    """ATen's noise.div_(1 - p) of a kept element, as a float32 value."""
    return torch.ones(()).div_(1 - p).item()


def dropout_keep(numel: int, p: float) -> tuple[torch.Tensor, float]:
    """Where nn.Dropout(p) keeps an element (uint8 1/0, flat) and the kept elements' scale: ATen's own
    `torch.empty_like(x).bernoulli_(1 - p)` draw from torch's default CPU generator, so the same numbers."""
    return torch.empty(numel).bernoulli_(1 - p).to(torch.uint8), _scale(p)


def dropout_apply(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """x * keep * scale by csrc/dropout.c: dropout's forward, and (on the gradient) its backward."""
    x = x.contiguous()
    out = empty(*x.shape)
    c_kernels.load().dropout_apply(x.data_ptr(), keep.data_ptr(), scale, out.data_ptr(), x.numel())
    return out


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.keep, ctx.scale = keep, scale
        return dropout_apply(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return dropout_apply(grad, ctx.keep, ctx.scale), None, None


class Dropout(nn.Module):
    """The model's nn.Dropout applied by the C kernels, its noise torch's own draw: the same numbers (dropout_keep)."""

    def __init__(self, dropout: nn.Dropout):
        super().__init__()
        self.dropout = dropout

    def draws_noise(self) -> bool:
        """In training with 0 < p < 1: the noise is drawn (else nn.Dropout passes x through, or zeroes it)."""
        return self.dropout.training and 0 < self.dropout.p < 1

    def kernels_take(self, x: torch.Tensor) -> bool:
        return tensor_fits_kernels(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.draws_noise() and self.kernels_take(x)):
            return self.dropout(x)
        keep, scale = dropout_keep(x.numel(), self.dropout.p)
        return _Dropout.apply(x, keep, scale)


# -- the conv tail -----------------------------------------------------------------------------------

def fusable_bn(layer) -> bool:
    """BatchNorm2d with weight, bias and running statistics: the kind the kernels compute."""
    return type(layer) is nn.BatchNorm2d and layer.affine and layer.track_running_stats


def _batch_statistics(bn: nn.BatchNorm2d) -> tuple[bool, float]:
    """(normalize by the batch's statistics, running statistics' momentum), as nn.BatchNorm2d.forward decides
    them for a fusable_bn; a training batch is counted, as there."""
    if not bn.training:
        return False, 0.0
    bn.num_batches_tracked.add_(1)
    return True, 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


def _tail_forward(x: torch.Tensor, bn: nn.BatchNorm2d | None, flags: int, keep, scale: float,
                  momentum: float, with_arg: bool, in_place: bool = False):
    """The kernel's forward pass: (output, where each max came from, BatchNorm's per-channel numbers,
    the kernel's input: x, or tanh / sigmoid of x, computed into x itself if in_place)."""
    n, c, h, w = x.shape
    if flags & TANH:
        src = torch.tanh_(x) if in_place else torch.tanh(x)
    elif flags & SIGMOID:
        src = torch.sigmoid_(x) if in_place else torch.sigmoid(x)
    else:
        src = x
    out = empty(n, c, h // 2, w // 2)
    # where each max came from, or each window's ReLU bits (csrc/conv_tail.c's RELU_BITS: the same rule)
    relu_bits = flags & (AVG | RELU | BN_BEFORE | BN_AFTER) == AVG | RELU
    arg = empty(n, c, h // 2, w // 2, dtype=torch.uint8) if with_arg and (not flags & AVG or relu_bits) else None
    stats = empty(c, BN_FIELDS) if bn is not None else None
    weight, bias, running = (bn.weight, bn.bias, (bn.running_mean, bn.running_var)) if bn is not None else \
        (None, None, (None, None))
    c_kernels.load().tail_forward(src.data_ptr(), out.data_ptr(), _ptr(arg), _ptr(keep), scale, _ptr(stats),
                                  _ptr(weight), _ptr(bias), _ptr(running[0]), _ptr(running[1]), momentum,
                                  bn.eps if bn is not None else 0.0, n, c, h, w, flags)
    return out, arg, stats, src


def tail_train_forward(x: torch.Tensor, bn, flags: int, keep, scale: float, momentum: float,
                       in_place: bool = False):
    """The tail for training (ConvTail.prepare's arguments): (output, what tail_train_backward needs).
    in_place: tanh or sigmoid may overwrite x (one_node, where x is a convolution's output kept nowhere
    else): the same values without a new conv-sized tensor, 1-3 % of an R2 part I step."""
    out, arg, stats, src = _tail_forward(x, bn, flags, keep, scale, momentum, with_arg=True, in_place=in_place)
    return out, (src, arg, keep, stats, bn.weight if bn is not None else None, flags, scale)


def tail_train_backward(state, grad: torch.Tensor):
    """(grad_x, BatchNorm's weight and bias gradients or None) of tail_train_forward's output gradient."""
    src, arg, keep, stats, weight, flags, scale = state
    n, c, h, w = src.shape
    grad = grad.contiguous()
    grad_x = empty(n, c, h, w)
    grad_w, grad_b = (empty(c), empty(c)) if stats is not None else (None, None)
    c_kernels.load().tail_backward(src.data_ptr(), grad.data_ptr(), _ptr(arg), _ptr(keep), scale, _ptr(stats),
                                   _ptr(weight), grad_x.data_ptr(), _ptr(grad_w), _ptr(grad_b), n, c, h, w, flags)
    return grad_x, grad_w, grad_b


class _Tail(torch.autograd.Function):
    """ConvTail's C kernels; BatchNorm's weight and bias are inputs, so they get their gradients."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn, flags, keep, scale, momentum):
        out, ctx.state = tail_train_forward(x, bn, flags, keep, scale, momentum)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_w, grad_b = tail_train_backward(ctx.state, grad)
        return (grad_x, grad_w if ctx.needs_input_grad[1] else None, grad_b if ctx.needs_input_grad[2] else None,
                None, None, None, None, None)


class ConvTail(nn.Module):
    """A conv layer's tail as one layer: [BatchNorm] activation [BatchNorm] [dropout] 2x2 pool.

    `layers` are the model's own modules in order (so its parameters, running statistics and training
    flags); at most one BatchNorm, before the activation only with ReLU. The same numbers as running them
    one after another (BatchNorm's gradients to float rounding); layers.fuse_relu_max_pool builds it.
    """

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        kinds = [type(layer) for layer in layers]
        act = next(i for i, kind in enumerate(kinds) if kind in ACTIVATIONS)
        bns = [i for i, layer in enumerate(layers) if fusable_bn(layer)]
        if len(bns) > 1 or (bns and bns[0] < act and kinds[act] is not nn.ReLU):
            raise ValueError(f"not a tail the kernels compute: {kinds}")
        self._bn = bns[0] if bns else None
        self._drop = kinds.index(nn.Dropout) if nn.Dropout in kinds else None
        self.flags = (ACTIVATIONS[kinds[act]] | (AVG if kinds[-1] is nn.AvgPool2d else 0)
                      | ((BN_BEFORE if self._bn < act else BN_AFTER) if bns else 0))

    def _one_by_one(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self.layers)
        if type(layers[-2]) is nn.ReLU and not self.flags & AVG:   # max-pool commutes with ReLU: pool first
            for layer in layers[:-2]:
                x = layer(x)
            return torch.relu(layers[-1](x))
        for layer in layers:
            x = layer(x)
        return x

    def bn(self) -> nn.BatchNorm2d | None:
        return self.layers[self._bn] if self._bn is not None else None

    def dropout(self) -> nn.Dropout | None:
        return self.layers[self._drop] if self._drop is not None else None

    def kernels_take(self, x: torch.Tensor) -> bool:
        """The C kernels compute this tail for x (else the layers run one by one)."""
        bn, drop = self.bn(), self.dropout()
        return (_kernels_take(x) and (bn is None or _bn_takes(bn, x))
                and not (drop is not None and drop.training and drop.p >= 1))

    def prepare(self, x: torch.Tensor) -> tuple:
        """The kernel's arguments for one batch (bn, flags, keep, scale, momentum), as the layers would run:
        a training batch counted by BatchNorm, dropout's noise drawn."""
        bn, drop = self.bn(), self.dropout()
        train, momentum = _batch_statistics(bn) if bn is not None else (False, 0.0)
        flags = self.flags | (BN_TRAIN if train else 0)
        keep, scale = None, 0.0
        if drop is not None and drop.training and drop.p > 0:
            keep, scale = dropout_keep(x.numel(), drop.p)
            flags |= NOISE
        return bn, flags, keep, scale, momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.kernels_take(x):
            return self._one_by_one(x)
        bn, flags, keep, scale, momentum = self.prepare(x)
        if torch.is_grad_enabled() and (x.requires_grad or (bn is not None and bn.weight.requires_grad)):
            return _Tail.apply(x, *(bn.weight, bn.bias) if bn is not None else (None, None), bn, flags, keep,
                               scale, momentum)
        return _tail_forward(x, bn, flags, keep, scale, momentum, with_arg=False)[0]


# -- BatchNorm on its own --------------------------------------------------------------------------------

def _bn_forward(x: torch.Tensor, bn: nn.BatchNorm2d, train: bool, momentum: float):
    """csrc/batch_norm.c's forward pass: (output, BatchNorm's per-channel numbers for the backward pass)."""
    n, c = x.shape[:2]
    out, stats = empty(*x.shape), empty(c, BN_FIELDS)
    c_kernels.load().bn_forward(x.data_ptr(), out.data_ptr(), stats.data_ptr(), bn.weight.data_ptr(),
                                bn.bias.data_ptr(), bn.running_mean.data_ptr(), bn.running_var.data_ptr(), momentum,
                                bn.eps, n, c, x[0, 0].numel(), int(train))
    return out, stats


def bn_train_forward(x: torch.Tensor, bn: nn.BatchNorm2d):
    """bn on x for training, a batch counted: (output, what bn_train_backward needs)."""
    train, momentum = _batch_statistics(bn)
    out, stats = _bn_forward(x, bn, train, momentum)
    return out, (x, stats, bn.weight, train)


def bn_train_backward(state, grad: torch.Tensor):
    """(grad_x, grad_weight, grad_bias) of bn_train_forward's output gradient."""
    x, stats, weight, train = state
    n, c = x.shape[:2]
    grad = grad.contiguous()
    grad_x, grad_w, grad_b = empty(*x.shape), empty(c), empty(c)
    c_kernels.load().bn_backward(x.data_ptr(), grad.data_ptr(), stats.data_ptr(), weight.data_ptr(),
                                 grad_x.data_ptr(), grad_w.data_ptr(), grad_b.data_ptr(), n, c, x[0, 0].numel(),
                                 int(train))
    return grad_x, grad_w, grad_b


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, bn):
        out, ctx.state = bn_train_forward(x, bn)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_w, grad_b = bn_train_backward(ctx.state, grad)
        return (grad_x, grad_w if ctx.needs_input_grad[1] else None, grad_b if ctx.needs_input_grad[2] else None,
                None)


class BatchNorm(nn.Module):
    """The model's nn.BatchNorm2d (a fusable_bn outside a conv tail: R2 part II's, after the pool) through
    csrc/batch_norm.c: the same outputs and running statistics, gradients to float rounding."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.bn = bn

    def kernels_take(self, x: torch.Tensor) -> bool:
        return _kernels_take(x, even_sides=False) and _bn_takes(self.bn, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if not self.kernels_take(x):
            return bn(x)
        if torch.is_grad_enabled() and (x.requires_grad or bn.weight.requires_grad):
            return _BatchNorm.apply(x, bn.weight, bn.bias, bn)
        return _bn_forward(x, bn, *_batch_statistics(bn))[0]
