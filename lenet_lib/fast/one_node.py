"""A fused network's training pass as one autograd node: OneNodeSequential (layers.fuse_relu_max_pool builds it).

Why: at small batches a training step spends as long in module calls and autograd nodes (one per layer) as
in its arithmetic. Here the training forward runs each layer's training function in a loop and keeps what
its backward needs; the backward runs them in reverse, with the ATen calls the layers' own nodes make, so
the numbers are the same bit for bit (tests/test_one_node.py). cross_entropy_backward also runs the loss
and the backward pass without the autograd engine (tests/test_engine_free.py).

What the loop does not know runs layer by layer, as nn.Sequential would: another layer type (LeCun's
sparse c3, an unfused pool), hooks on any layer, autocast, inputs or shapes the kernels do not take,
eval mode, no gradients, or a torch whose private APIs used here fail their self-check (_private_apis_agree;
README.md beside this file). Plans are cached per input shape: a dropout rate set to 1 after the first batch
of a shape is not seen.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

from lenet_lib.fast import switches
from lenet_lib.fast.fused import (BatchNorm, ConvTail, Dropout, bn_train_backward, bn_train_forward, dropout_apply,
                                  dropout_keep, tail_train_backward, tail_train_forward)
from lenet_lib.fast.conv import Conv2d, conv_path, conv_train_backward, conv_train_forward, conv_trains_fast
from lenet_lib.fast.pool import (ReLUMaxPool2d, relu_max_pool_kernels_take, relu_max_pool_train_backward,
                                 relu_max_pool_train_forward)


class Step(NamedTuple):
    """One layer in the loop, bound when a plan is made for an input shape: forward(x) -> (output, state);
    backward(state, grad, need_input) -> (input gradient or None, parameter gradients); params: where the
    parameters whose gradients backward returns are stored, in order: (module._parameters, name) pairs, read
    at each call, so that a parameter replaced on the layer is the one trained. fresh_output: the output is
    a new tensor that nothing keeps, so the next step may overwrite it; forward_in_place: a forward that
    may overwrite its input, used after such a step."""
    out_shape: tuple
    forward: Callable
    backward: Callable
    params: tuple = ()
    fresh_output: bool = False
    forward_in_place: Callable | None = None


def _own(layer: nn.Module, *names: str) -> tuple:
    """The layer's parameters of these names that it has (a bias may be None), as Step.params pairs."""
    return tuple((layer._parameters, name) for name in names if layer._parameters[name] is not None)


def _conv(conv: Conv2d, x: torch.Tensor) -> Step | None:
    padding = conv.square_padding()
    if padding is None or x.dim() != 4 or x.shape[1] != conv.in_channels or not conv_trains_fast(x, conv.weight, padding):
        return None
    (kh, kw), (n, _, h, w) = conv.kernel_size, x.shape
    path, stored, has_bias = conv_path(x, conv.weight, padding), conv._parameters, conv.bias is not None

    def backward(state, grad, need_input):
        grad_x, grad_w, grad_b = conv_train_backward(state, grad, (need_input, True, has_bias))
        return grad_x, (grad_w, grad_b) if has_bias else (grad_w,)
    return Step((n, conv.out_channels, h + 2 * padding - kh + 1, w + 2 * padding - kw + 1),
                lambda x: conv_train_forward(x, stored["weight"], stored["bias"], padding, path), backward,
                _own(conv, "weight", "bias"), fresh_output=True)


def _halved(x: torch.Tensor) -> tuple:
    n, c, h, w = x.shape
    return n, c, h // 2, w // 2


def _relu_max_pool(pool: ReLUMaxPool2d, x: torch.Tensor) -> Step | None:
    if not relu_max_pool_kernels_take(x):
        return None
    return Step(_halved(x), relu_max_pool_train_forward,
                lambda state, grad, need_input: (relu_max_pool_train_backward(state, grad), ()))


def _tail(tail: ConvTail, x: torch.Tensor) -> Step | None:
    if not tail.kernels_take(x):
        return None
    bn = tail.bn()

    def backward(state, grad, need_input):
        grad_x, grad_w, grad_b = tail_train_backward(state, grad)
        return grad_x, () if bn is None else (grad_w, grad_b)
    return Step(_halved(x), lambda x: tail_train_forward(x, *tail.prepare(x)), backward,
                () if bn is None else _own(bn, "weight", "bias"),
                forward_in_place=lambda x: tail_train_forward(x, *tail.prepare(x), in_place=True))


def _batch_norm(layer: BatchNorm, x: torch.Tensor) -> Step | None:
    if not layer.kernels_take(x):
        return None

    def backward(state, grad, need_input):
        grad_x, grad_w, grad_b = bn_train_backward(state, grad)
        return grad_x, (grad_w, grad_b)
    return Step(tuple(x.shape), lambda x: bn_train_forward(x, layer.bn), backward, _own(layer.bn, "weight", "bias"))


def _dropout(drop: Dropout, x: torch.Tensor) -> Step | None:
    if drop.dropout.p >= 1 or not drop.kernels_take(x):
        return None

    def forward(x):
        if not drop.draws_noise():   # eval mode or p = 0: nn.Dropout returns x itself
            return x, None
        keep, scale = dropout_keep(x.numel(), drop.dropout.p)
        return dropout_apply(x, keep, scale), (keep, scale)
    return Step(tuple(x.shape), forward,
                lambda state, grad, need_input: (grad if state is None else dropout_apply(grad, *state), ()))


def _flatten(flatten: nn.Flatten, x: torch.Tensor) -> Step | None:
    if (flatten.start_dim, flatten.end_dim) != (1, -1) or x.dim() < 2:
        return None
    return Step((x.shape[0], x[0].numel()), lambda x: (x.flatten(1), x.shape),
                lambda shape, grad, need_input: (grad.reshape(shape), ()))


def _linear(linear: nn.Linear, x: torch.Tensor) -> Step | None:
    if x.dim() != 2 or x.shape[1] != linear.in_features:
        return None
    stored, has_bias = linear._parameters, linear.bias is not None

    def backward(x, grad, need_input):
        # autograd's AddmmBackward0 (MmBackward0 without a bias) and TBackward0 for F.linear on a 2-D input
        grad_w = grad.t().mm(x)
        grad_x = grad.mm(stored["weight"]) if need_input else None
        return grad_x, (grad_w, grad.sum(0)) if has_bias else (grad_w,)
    return Step((x.shape[0], linear.out_features), lambda x: (F.linear(x, stored["weight"], stored["bias"]), x),
                backward, _own(linear, "weight", "bias"))


def _activation(function, function_backward) -> Callable:
    """An elementwise activation whose backward needs its output (torch.relu, tanh, sigmoid)."""
    def step(layer: nn.Module, x: torch.Tensor) -> Step | None:
        if getattr(layer, "inplace", False):
            return None
        return Step(tuple(x.shape), lambda x: (function(x),) * 2,
                    lambda out, grad, need_input: (function_backward(grad, out), ()))
    return step


# layer type -> how it runs in the loop: step(layer, x shaped like its input) -> Step, or None where the
# layer's own fast training path would not run
STEPS = {
    Conv2d: _conv, ReLUMaxPool2d: _relu_max_pool, ConvTail: _tail, BatchNorm: _batch_norm, Dropout: _dropout,
    nn.Flatten: _flatten, nn.Linear: _linear,
    nn.ReLU: _activation(torch.relu, lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0)),
    nn.Tanh: _activation(torch.tanh, torch.ops.aten.tanh_backward),
    nn.Sigmoid: _activation(torch.sigmoid, torch.ops.aten.sigmoid_backward),
}


def _forward(steps, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Each step's forward in order: (output, each step's state for its backward)."""
    states = []
    for step in steps:
        x, state = step.forward(x)
        states.append(state)
    return x, states


def _backward(steps, states: list, grad: torch.Tensor, need_input: bool) -> tuple:
    """Each step's backward in reverse: (the input's gradient or None, the parameters' gradients in
    _Plan.params order)."""
    own = []
    for i in range(len(steps) - 1, -1, -1):
        grad, grads = steps[i].backward(states[i], grad, i > 0 or need_input)
        own.append(grads)
    return grad, [g for grads in reversed(own) for g in grads]


class _OneNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, plan, *params):
        x, states = _forward(plan, x)
        if states[-1] is x:   # the output kept for the backward: an alias, so that it does not hold its own node
            states[-1] = x.detach()
        ctx.plan, ctx.states = plan, states
        return x

    @staticmethod
    def backward(ctx, grad):
        grad, grads = _backward(ctx.plan, ctx.states, grad, ctx.needs_input_grad[0])
        return (grad if ctx.needs_input_grad[0] else None, None, *grads)


class _Plan(NamedTuple):
    steps: tuple   # a Step per layer, Identity left out
    params: tuple  # every Step's (module._parameters, name) pairs, in order
    hooks: list    # every module's hook dicts (registering a hook adds to them)

    def parameters(self) -> list:
        """The parameters the steps train, as stored on their layers now (params' order)."""
        return [stored[name] for stored, name in self.params]


def _hooks_anywhere(plan: _Plan) -> bool:
    """Hooks expect each layer to be called: with any, the layers run one by one."""
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks or any(plan.hooks))


class OneNodeSequential(nn.Sequential):
    """nn.Sequential whose training forward on CPU is one autograd node (module docstring); else nn.Sequential's."""

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_plans", None)   # bound to these layers: a copy (deepcopy, pickle) makes its own
        return state

    def _plan(self, x: torch.Tensor) -> _Plan | None:
        """How the loop trains on this input, or None where the layers must run one by one (eval mode and
        no gradients included)."""
        if (not (self.training and torch.is_grad_enabled()) or x.device.type != "cpu" or x.dtype != torch.float32
                or not x.is_contiguous() or torch.is_autocast_enabled("cpu") or not switches.ON["one_node"]
                or not _private_apis_agree()):
            return None
        key = (x.shape, tuple(map(id, self._modules.values())))
        plans = self.__dict__.setdefault("_plans", {})
        if key not in plans:
            plans[key] = self._walk(x.shape)
        plan = plans[key]
        return None if plan is None or _hooks_anywhere(plan) else plan

    def _walk(self, shape) -> _Plan | None:
        steps, probe = [], torch.empty(shape)   # shapes only: empty tensors are never read
        for layer in self:
            if type(layer) is nn.Identity:
                continue
            step = STEPS[type(layer)](layer, probe) if type(layer) in STEPS else None
            if step is None:
                return None
            if step.forward_in_place is not None and steps and steps[-1].fresh_output:
                step = step._replace(forward=step.forward_in_place)
            steps.append(step)
            probe = torch.empty(step.out_shape)
        if not steps:
            return None
        hooks = [hook for m in self.modules()
                 for hook in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]
        return _Plan(tuple(steps), tuple(ref for step in steps for ref in step.params), hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan(x)
        if plan is None:
            return super().forward(x)
        return _OneNode.apply(x, plan.steps, *plan.parameters())

    def cross_entropy_backward(self, x: torch.Tensor, y: torch.Tensor, scale: float | None = None):
        """One training batch without the autograd engine: this network's forward pass, F.cross_entropy(logits,
        y), and the backward pass of the loss (of loss * scale, if given), each parameter's gradient stored in
        .grad, or added to it, as loss.backward() stores it. Returns (logits, loss), without gradients; the
        same numbers as autograd's bit for bit (tests/test_engine_free.py).

        What it saves is the engine around the one node: the loss's two nodes, the node's Python entry and
        exit, and a gradient accumulation node per parameter (module docstring). None where it cannot stand
        in for autograd, and the caller runs autograd: no plan (see forward), an input that wants its own
        gradient, a parameter frozen, strided or with hooks of its own, anomaly detection, or targets other
        than cross_entropy's plain case (a class index per image)."""
        plan = self._plan(x)
        if (plan is None or x.requires_grad or len(plan.steps[-1].out_shape) != 2 or y.dtype != torch.int64
                or y.dim() != 1 or y.shape[0] != x.shape[0] or y.device != x.device or torch.is_anomaly_enabled()):
            return None
        params = plan.parameters()
        if not switches.ON["engine_free"] or not _loss_apis_agree() or not all(
                p.requires_grad and p.is_contiguous() and not p._backward_hooks and not p._post_accumulate_grad_hooks
                for p in params):
            return None
        with torch.no_grad():
            logits, states = _forward(plan.steps, x)
            loss, loss_state = cross_entropy_train_forward(logits, y)
            grad = cross_entropy_train_backward(loss_state, y, 1.0 if scale is None else scale)
            grads = _backward(plan.steps, states, grad, False)[1]
            for p, grad in zip(params, grads):
                if p.grad is None:   # as AccumulateGrad stores it: in the parameter's (contiguous) layout, for
                    p.grad = grad if grad.is_contiguous() else grad.contiguous()   # the optimizers' kernels
                else:   # AccumulateGrad's sum into the gradient there (gd: a batch at a time)
                    p.grad += grad
        return logits, loss


def cross_entropy_train_forward(logits: torch.Tensor, y: torch.Tensor):
    """F.cross_entropy(logits, y) (mean over the batch) by its ATen calls: (loss, what the backward needs)."""
    log_p = torch._log_softmax(logits, 1, False)
    loss, total_weight = torch.ops.aten.nll_loss_forward(log_p, y, None, 1, -100)
    return loss, (log_p, total_weight)


def cross_entropy_train_backward(state, y: torch.Tensor, seed: float) -> torch.Tensor:
    """The logits' gradient of `seed` times the loss, as autograd's NllLossBackward0 and
    LogSoftmaxBackward0 compute it (the seed as loss.backward() or (loss * seed).backward() starts it)."""
    log_p, total_weight = state
    grad = torch.ops.aten.nll_loss_backward(torch.full((), seed), log_p, y, None, 1, -100, total_weight)
    return torch.ops.aten._log_softmax_backward_data(grad, log_p, 1, log_p.dtype)


# -- self-checks of the private torch APIs above (README.md's table): once per process, on tiny inputs ------

def _sees_public_hooks() -> bool:
    """torch.nn.modules.module's global hook dicts, a module's own hook dicts and _parameters, and a tensor's
    _backward_hooks / _post_accumulate_grad_hooks hold what torch's public functions register."""
    registers = (torch_module.register_module_forward_hook, torch_module.register_module_forward_pre_hook,
                 torch_module.register_module_full_backward_hook, torch_module.register_module_full_backward_pre_hook)
    globals_ = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                "_global_backward_pre_hooks")
    for register, name in zip(registers, globals_):
        handle = register(lambda *args: None)
        try:
            if not getattr(torch_module, name):
                return False
        finally:
            handle.remove()
        if getattr(torch_module, name):
            return False
    layer, hook = nn.Linear(1, 1, device="meta"), (lambda *args: None)   # meta: no draw from torch's generator
    layer.register_forward_hook(hook)
    layer.register_forward_pre_hook(hook)
    layer.register_full_backward_hook(hook)
    layer.register_full_backward_pre_hook(hook)
    if not (layer._forward_hooks and layer._forward_pre_hooks and layer._backward_hooks and layer._backward_pre_hooks
            and layer._parameters["weight"] is layer.weight):
        return False
    p = torch.zeros(2, requires_grad=True)
    if p._backward_hooks or p._post_accumulate_grad_hooks:
        return False
    p.register_hook(lambda grad: grad)
    p.register_post_accumulate_grad_hook(lambda param: None)
    return bool(p._backward_hooks) and bool(p._post_accumulate_grad_hooks)


def _activations_agree() -> bool:
    """STEPS' backward ATen calls give autograd's gradients of relu, tanh and sigmoid bit for bit."""
    x = torch.linspace(-3, 3, 24).reshape(4, 6).requires_grad_()
    grad = torch.linspace(-1, 2, 24).reshape(4, 6)
    for layer in (nn.ReLU(), nn.Tanh(), nn.Sigmoid()):
        step = STEPS[type(layer)](layer, x)
        out, state = step.forward(x.detach())
        theirs, = torch.autograd.grad(layer(x), x, grad)
        if not (torch.equal(out, layer(x).detach()) and torch.equal(step.backward(state, grad, True)[0], theirs)):
            return False
    return True


@functools.cache
def _private_apis_agree() -> bool:
    """Once per process: the hook dicts and the activations' backward calls behave as this module assumes
    (else every OneNodeSequential runs layer by layer, torch's public path)."""
    saved = torch.get_rng_state()
    try:
        return _sees_public_hooks() and _activations_agree()
    except (AttributeError, RuntimeError, TypeError):
        return False
    finally:
        torch.set_rng_state(saved)   # training's draws (dropout) must not see the check


@functools.cache
def _loss_apis_agree() -> bool:
    """Once per process: cross_entropy_train_forward / _backward give F.cross_entropy's loss and autograd's
    gradient bit for bit (else cross_entropy_backward declines and autograd runs)."""
    try:
        logits = torch.linspace(-2, 3, 30).reshape(5, 6).requires_grad_()
        y = torch.tensor([0, 5, 2, 2, 1])
        loss, state = cross_entropy_train_forward(logits.detach(), y)
        theirs = F.cross_entropy(logits, y)
        grad, = torch.autograd.grad(theirs * 3.0, logits)
        return torch.equal(loss, theirs.detach()) and torch.equal(cross_entropy_train_backward(state, y, 3.0), grad)
    except (AttributeError, RuntimeError, TypeError):
        return False
