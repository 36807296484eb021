"""LeNet-5's convolutions for training on CPU: c1 and c3 by the C kernels (csrc/conv1.c, csrc/conv3.c), else
ATen's forward with forward convolutions backward. docs/speed.md says what each buys."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lenet_lib.fast import c_kernels
from lenet_lib.fast.fused import empty


def conv_path(x: torch.Tensor, weight: torch.Tensor, padding: int) -> tuple[bool, bool, bool]:
    """Which kernels train this convolution for x's shape: (c1 by csrc/conv1.c both ways, c3's input gradient
    by csrc/conv3.c, c3's forward and weight gradient by csrc/conv3.c). Else ATen forward and forward
    convolutions backward."""
    c1, c3 = _c1_kernels_take(x, weight, padding), _c3_kernels_take(x, weight, padding)
    return c1, c3, c3 and _c3_in_c(x, weight)


def conv_train_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                       path: tuple[bool, bool, bool] | None = None):
    """The convolution for training: (output, what conv_train_backward needs); path: conv_path's, if known."""
    path = path or conv_path(x, weight, padding)
    return _forward(x, weight, bias, padding, path[0], path[2]), (x, weight, padding, bias is not None, path)


def conv_train_backward(state, grad: torch.Tensor, needs=(True, True, True)):
    """(grad_x, grad_weight, grad_bias) of conv_train_forward's output gradient; None where `needs` says not
    (input, weight, bias)."""
    x, weight, padding, has_bias, (c1, c3, c3_in_c) = state
    n, c, h, w = x.shape
    k, maps = weight.shape[-1], weight.shape[0]
    grad_x = grad_weight = grad_bias = None
    if c1 or c3:
        grad = grad.contiguous()
    if needs[0] and c3:
        grad_x = empty(n, c, h, w)
        c_kernels.load().conv3_input_grad(grad.data_ptr(), weight.contiguous().data_ptr(), grad_x.data_ptr(),
                                          n, c, h, w, k, maps)
    elif needs[0]:
        grad_x = F.conv_transpose2d(grad, weight, padding=padding)
    if (needs[1] or needs[2]) and (c1 or c3_in_c):
        grad_weight, grad_bias = empty(*weight.shape), empty(maps)
        if c1:
            c_kernels.load().conv_weight_grad(x.data_ptr(), grad.data_ptr(), grad_weight.data_ptr(),
                                              grad_bias.data_ptr(), n, c, h, w, k, padding)
        else:
            c_kernels.load().conv3_weight_grad(x.data_ptr(), grad.data_ptr(), grad_weight.data_ptr(),
                                               grad_bias.data_ptr(), n, c, h, w, k, maps)
        return grad_x, grad_weight, grad_bias if has_bias else None
    if needs[1]:
        # sum over batch and positions of grad[n, o, p] * x[n, c, p + k]: batch becomes the channel axis
        grad_weight = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=padding).transpose(0, 1)
    if has_bias and needs[2]:
        grad_bias = grad.sum((0, 2, 3))
    return grad_x, grad_weight, grad_bias


class _Conv2dForwardBackward(torch.autograd.Function):
    """conv_train_forward and conv_train_backward as an autograd node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int):
        out, ctx.state = conv_train_forward(x, weight, bias, padding)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (*conv_train_backward(ctx.state, grad, ctx.needs_input_grad[:3]), None)


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, c1: bool,
             c3_in_c: bool):
    """The convolution's output: csrc/conv1.c's for c1, csrc/conv3.c's for c3_in_c, else ATen's."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    if c1 or c3_in_c:
        out = empty(n, weight.shape[0], h + 2 * padding - k + 1, w + 2 * padding - k + 1)
        run = c_kernels.load().conv1_forward if c1 else c_kernels.load().conv3_forward
        run(x.data_ptr(), weight.contiguous().data_ptr(), None if bias is None else bias.contiguous().data_ptr(),
            out.data_ptr(), n, c, h, w, k, padding if c1 else weight.shape[0])
        return out
    return F.conv2d(x, weight, bias, padding=padding)


FAST_BACKWARD_MIN_IN_CHANNELS = 6   # below this (c1: 1 or 3 channels) ATen's backward beats forward convolutions
# without AVX-512: images x output positions up to which csrc/conv3.c's forward and weight gradient beat oneDNN's
C3_SMALL = 4096


def _c_kernels_take(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous()
            and weight.shape[-1] == weight.shape[-2] and c_kernels.load() is not None)


def _c1_kernels_take(x: torch.Tensor, weight: torch.Tensor, padding: int) -> bool:
    """c1's shape for csrc/conv1.c: 6 maps, square kernel <= 5, output rows of 16 or more."""
    return (_c_kernels_take(x, weight) and weight.shape[0] == 6 and weight.shape[-1] <= 5
            and x.shape[-1] + 2 * padding - weight.shape[-1] + 1 >= 16)


def _c3_kernels_take(x: torch.Tensor, weight: torch.Tensor, padding: int) -> bool:
    """c3's shape for csrc/conv3.c: no padding, <= 16 maps, <= 400 taps, output rows <= 16, <= 112 positions."""
    ho, wo = x.shape[-2] - weight.shape[-1] + 1, x.shape[-1] - weight.shape[-1] + 1
    return (padding == 0 and weight.shape[0] <= 16 and weight[0].numel() <= 400 and 0 < wo <= 16
            and ho * wo <= 112 and _c_kernels_take(x, weight))


def _c3_in_c(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """csrc/conv3.c's forward and weight gradient beat oneDNN's: at every size where they run direct
    (AVX-512, LeNet-5's c3), else up to C3_SMALL."""
    return (x.shape[0] * (x.shape[-2] - weight.shape[-1] + 1) * (x.shape[-1] - weight.shape[-1] + 1) <= C3_SMALL
            or bool(c_kernels.load().conv3_direct(weight.shape[-1], x.shape[-1], weight.shape[0])))


def conv_trains_fast(x: torch.Tensor, weight: torch.Tensor, padding: int) -> bool:
    """Training takes conv_train_forward's path: on CPU, outside autocast, where its backward beats ATen's."""
    return (x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and (weight.shape[1] >= FAST_BACKWARD_MIN_IN_CHANNELS or _c1_kernels_take(x, weight, padding)))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=padding) with stride 1; faster training on CPU (module docstring)."""
    if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad) and conv_trains_fast(x, weight, padding):
        return _Conv2dForwardBackward.apply(x, weight, bias, padding)
    if x.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and _c1_kernels_take(x, weight, padding):
        # evaluation: c1's forward as in training, about 2x oneDNN's at batch 256 (-40 ms per 10,000 images)
        return _forward(x, weight, bias, padding, c1=True, c3_in_c=False)
    return F.conv2d(x, weight, bias, padding=padding)


class Conv2d(nn.Conv2d):
    """nn.Conv2d; stride-1, single-group convolutions (LeNet-5's) go through conv2d above."""

    def square_padding(self) -> int | None:
        """The padding of a stride-1, single-group, zero-padded convolution with equal padding on both
        axes (conv2d's case), else None."""
        if (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple)
                and self.padding[0] == self.padding[1]):
            return self.padding[0]
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.square_padding()
        return super().forward(x) if padding is None else conv2d(x, self.weight, self.bias, padding)


class MaskedConv2d(Conv2d):
    """Conv2d whose weight is multiplied by its `mask` buffer first (LeCun's sparse c3, core.models.SparseConv2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding, weight = self.square_padding(), self.weight * self.mask
        if padding is None:
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return conv2d(x, weight, self.bias, padding)
