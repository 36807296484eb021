"""CPU speed tricks for LeNet-5's layers, all in one place: torch's numbers, less time.

Measured on a 2-core CPU, batch 128 (`make bench` shows the effect on whole epochs):
- MaxPool2d: ATen's CPU max_pool2d branches on every comparison; on unsorted values its forward and
  backward take 1.8 ms for a 128x6x28x28 batch, three strided `torch.maximum` and their masks 0.64 ms.
  Same values, and the gradient goes to the same element (the first maximum of the window in row-major
  order, as ATen picks it), so training is bit-identical. Whole MNIST epochs: -2 % training time, and
  test-set evaluation about twice as fast.
- Conv2d (c3: 6 -> 16 channels): ATen's CPU convolution backward takes 1.19 ms for c3 at batch 128; the
  same gradients as forward convolutions 0.92 ms: the weight gradient is a convolution of the input by
  the output gradient (batch as channels), the input gradient a transposed convolution. They agree with
  ATen's to float32 rounding (another summation order) and are as close to a float64 reference. Whole
  epochs: -2 %. c1 keeps ATen's backward: with one or three input channels its weight gradient is
  faster there. So does bf16 autocast, which casts inside ATen's convolution.
- ReLU + max-pool, fused (fuse_relu_max_pool; train() uses it on CPU): about a quarter of a step went to
  ReLU and pooling as separate ops, each reading and writing a whole activation. C kernels
  (csrc/relu_maxpool.c: SSE2, OpenMP on torch's own thread pool, compiled on first use by c_kernels)
  do each direction in one pass: forward + backward for c1's 128x6x28x28 in 0.26 ms against 0.73 ms for
  ReLU and the tournament. Training steps 1.30-1.40x faster (20-step turns), whole epochs 1.25-1.35x;
  bit-identical numbers. Without x86-64 or a C compiler: pooling first, then ReLU on a quarter of the
  values (max-pool commutes with ReLU), 1.08x per step.
On CUDA the layers call torch's own kernels: there one fused kernel beats several small ones.

Measured and left out (whole epochs of the standard LeNet-5 unless said):
- channels_last with torch's layers: 1.14x per training step in 20-step turns, but whole epochs stayed
  within this machine's noise; and CPU BatchNorm after ReLU loses precision in it (5e-5 relative error in
  the forward, 7e-3 in gradients, against 5e-7 / 5e-6 in NCHW; float64 reference).
- torch.compile (inductor, CPU): 10.1 vs 6.4 ms per step. bf16 autocast: slower, `make bench` shows it.
- A C max-pool for channels_last (ctypes): 0.48 ms forward vs ATen's 0.60; no better than the tournament.
  The fused kernel in plain C left to gcc's auto-vectorizer: 0.85x per step; SSE2 by hand is what pays.
  Its planes split over Python threads instead of OpenMP: 1.22x per step against 1.31x. For scale,
  ReLU and pooling that cost nothing (wrong numbers, right shapes) would give 1.41x.
- Optimizer foreach, OMP_WAIT_POLICY=ACTIVE, glibc malloc thresholds: no measurable change.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
import torch.nn.functional as F

from . import c_kernels


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max pooling with stride 2 as a tournament: max of each row pair, then of the two rows.

    The choices are kept as float 0/1 masks: CPU kernels on bool masks (where, masked_fill) are 5-30x
    slower than a float multiply at these sizes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x00, x01, x10, x11 = _window_corners(x)
        top, bottom = torch.maximum(x00, x01), torch.maximum(x10, x11)
        # Strict ">" keeps the earlier element on ties: ATen's first maximum in row-major order.
        right_top, right_bottom, take_bottom = ((x01 > x00).to(x.dtype), (x11 > x10).to(x.dtype),
                                                (bottom > top).to(x.dtype))
        ctx.save_for_backward(right_top, right_bottom, take_bottom)
        ctx.input_shape = x.shape
        return torch.maximum(top, bottom)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        right_top, right_bottom, take_bottom = ctx.saved_tensors
        to_bottom = grad * take_bottom
        to_top = grad * (1 - take_bottom)
        grad_in = grad.new_zeros(ctx.input_shape)
        g00, g01, g10, g11 = _window_corners(grad_in)
        torch.mul(to_top, 1 - right_top, out=g00)
        torch.mul(to_top, right_top, out=g01)
        torch.mul(to_bottom, 1 - right_bottom, out=g10)
        torch.mul(to_bottom, right_bottom, out=g11)
        return grad_in


def _window_corners(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Views of the top-left, top-right, bottom-left and bottom-right element of every 2x2 window.

    Floor mode, as nn.MaxPool2d: an odd last row or column belongs to no window.
    """
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    return x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2], x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]


class _Conv2dForwardBackward(torch.autograd.Function):
    """conv2d (stride 1, no dilation, one group) whose backward pass is made of forward convolutions."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv_transpose2d(grad, weight, padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            # sum over batch and positions of grad[n, o, p] * x[n, c, p + k]: batch becomes the channel axis
            grad_weight = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=ctx.padding).transpose(0, 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


FAST_BACKWARD_MIN_IN_CHANNELS = 6   # below this (c1: 1 or 3 channels) ATen's backward is the faster one


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=padding) with stride 1; faster training on CPU (module docstring)."""
    if (x.device.type == "cpu" and torch.is_grad_enabled() and weight.shape[1] >= FAST_BACKWARD_MIN_IN_CHANNELS
            and (weight.requires_grad or x.requires_grad) and not torch.is_autocast_enabled("cpu")):
        return _Conv2dForwardBackward.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)


class Conv2d(nn.Conv2d):
    """nn.Conv2d; stride-1, single-group convolutions (LeNet-5's) go through conv2d above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple)
                and self.padding[0] == self.padding[1]):
            return conv2d(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2), faster on CPU (see the module docstring)."""
    if x.device.type != "cpu":
        return F.max_pool2d(x, 2)
    if not torch.is_grad_enabled() or not x.requires_grad:
        x00, x01, x10, x11 = _window_corners(x)
        return torch.maximum(torch.maximum(x00, x01), torch.maximum(x10, x11))
    return _MaxPool2x2.apply(x)


def _is_2x2(pool: nn.Module) -> bool:
    """A max-pool with 2x2 windows, stride 2, no padding: LeNet-5's."""
    return (isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d; the 2x2, stride-2 case that LeNet-5 uses goes through max_pool_2x2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x) if _is_2x2(self) else super().forward(x)


class _ReLUMaxPool2x2(torch.autograd.Function):
    """relu then 2x2 max-pool by the C kernels in csrc/relu_maxpool.c: one pass forward, one backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out = x.new_empty(n, c, h // 2, w // 2)
        arg = torch.empty(out.shape, dtype=torch.uint8)   # where each output's gradient goes
        c_kernels.load().relu_maxpool2x2_forward(x.data_ptr(), out.data_ptr(), arg.data_ptr(), n * c, h, w)
        ctx.save_for_backward(arg)
        ctx.input_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (arg,), (n, c, h, w) = ctx.saved_tensors, ctx.input_shape
        grad = grad.contiguous()
        grad_in = grad.new_empty(ctx.input_shape)
        c_kernels.load().relu_maxpool2x2_backward(grad.data_ptr(), arg.data_ptr(), grad_in.data_ptr(), n * c, h, w)
        return grad_in


def relu_max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(torch.relu(x), 2), the same numbers bit for bit, faster on CPU (module docstring)."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous()
            and c_kernels.load() is not None):
        return _ReLUMaxPool2x2.apply(x)
    # Max-pool commutes with ReLU (values and gradients): pooling first gives ReLU a quarter of the work.
    return torch.relu(max_pool_2x2(x))


class ReLUMaxPool2d(nn.Module):
    """ReLU followed by a 2x2, stride-2 max-pool, as one layer (see fuse_relu_max_pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_max_pool_2x2(x)


def fuse_relu_max_pool(model: nn.Module) -> nn.Module:
    """model for training on CPU: each ReLU directly followed by a 2x2 max-pool runs as one ReLUMaxPool2d.

    Returns a new nn.Sequential holding model's own layers (so its parameters and buffers) except that the
    pool's name holds the fused layer and the ReLU's name an Identity; the same numbers, bit for bit.
    model itself keeps its layers, so feature maps by name (forward_features) still see each one.
    Anything else (not a Sequential, nothing to fuse) comes back as model.
    """
    if not isinstance(model, nn.Sequential):
        return model
    layers, fused, children = [], False, list(model.named_children())
    i = 0
    while i < len(children):
        name, layer = children[i]
        if i + 1 < len(children) and type(layer) is nn.ReLU and _is_2x2(children[i + 1][1]):
            layers += [(name, nn.Identity()), (children[i + 1][0], ReLUMaxPool2d())]
            fused, i = True, i + 2
        else:
            layers.append((name, layer))
            i += 1
    return nn.Sequential(OrderedDict(layers)) if fused else model


def with_torch_layers(model: nn.Module) -> nn.Module:
    """model with torch's own Conv2d and MaxPool2d in place of the ones above, sharing their parameters.

    For comparisons: `make bench` times the reports' way with it, the tests check the layers against it.
    """
    for name, child in model.named_children():
        if type(child) is Conv2d:
            plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                              bias=child.bias is not None, device=child.weight.device)
            plain.weight, plain.bias = child.weight, child.bias
            setattr(model, name, plain)
        elif type(child) is MaxPool2d:
            setattr(model, name, nn.MaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                              ceil_mode=child.ceil_mode))
        else:
            with_torch_layers(child)
    return model
