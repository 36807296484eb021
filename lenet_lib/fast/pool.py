"""2x2 max pooling for training on CPU: torch's numbers, faster (docs/speed.md says how much).

max_pool_2x2 takes ATen's max-pool's place as a tournament of strided maxima; relu_max_pool_2x2 fuses the
ReLU before it into one pass each way (csrc/relu_maxpool.c), with the tournament as its fallback.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lenet_lib.fast import c_kernels
from lenet_lib.fast.fused import empty, tensor_fits_kernels


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


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2), faster on CPU (see the module docstring)."""
    if x.device.type != "cpu":
        return F.max_pool2d(x, 2)
    if not torch.is_grad_enabled() or not x.requires_grad:
        x00, x01, x10, x11 = _window_corners(x)
        return torch.maximum(torch.maximum(x00, x01), torch.maximum(x10, x11))
    return _MaxPool2x2.apply(x)


def is_2x2(pool: nn.Module) -> bool:
    """A max-pool with 2x2 windows, stride 2, no padding: LeNet-5's."""
    return (isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d; the 2x2, stride-2 case that LeNet-5 uses goes through max_pool_2x2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x) if is_2x2(self) else super().forward(x)


def relu_max_pool_train_forward(x: torch.Tensor):
    """relu then 2x2 max-pool by csrc/relu_maxpool.c, one pass: (output, what its backward needs)."""
    n, c, h, w = x.shape
    out = empty(n, c, h // 2, w // 2)
    arg = empty(n, c, h // 2, w // 2, dtype=torch.uint8)   # where each output's gradient goes
    c_kernels.load().relu_maxpool2x2_forward(x.data_ptr(), out.data_ptr(), arg.data_ptr(), n * c, h, w)
    return out, (arg, x.shape)


def relu_max_pool_train_backward(state, grad: torch.Tensor) -> torch.Tensor:
    (arg, (n, c, h, w)), grad = state, grad.contiguous()
    grad_in = empty(n, c, h, w)
    c_kernels.load().relu_maxpool2x2_backward(grad.data_ptr(), arg.data_ptr(), grad_in.data_ptr(), n * c, h, w)
    return grad_in


class _ReLUMaxPool2x2(torch.autograd.Function):
    """relu_max_pool_train_forward and its backward as an autograd node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out, ctx.state = relu_max_pool_train_forward(x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return relu_max_pool_train_backward(ctx.state, grad)


def relu_max_pool_kernels_take(x: torch.Tensor) -> bool:
    return x.dim() == 4 and tensor_fits_kernels(x)


def relu_max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(torch.relu(x), 2), the same numbers bit for bit, faster on CPU (module docstring)."""
    if relu_max_pool_kernels_take(x):
        return _ReLUMaxPool2x2.apply(x)
    # Max-pool commutes with ReLU (values and gradients): pooling first gives ReLU a quarter of the work.
    return torch.relu(max_pool_2x2(x))


class ReLUMaxPool2d(nn.Module):
    """ReLU followed by a 2x2, stride-2 max-pool, as one layer (see fuse_relu_max_pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_max_pool_2x2(x)
