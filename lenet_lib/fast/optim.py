"""Torch's fused optimizers stepped lean: the same numbers, less Python around the kernel (lean_steps).

The kernels are torch's private torch._fused_sgd_, _fused_adam_, _fused_adamw_ and _fused_adagrad_ (README.md
beside this file); a self-check (_lean_agrees) falls back to torch's own step where they differ.
"""
from __future__ import annotations

import functools

import torch

from lenet_lib.fast import switches


class _LeanStep:
    """A fused torch optimizer whose steps call its fused kernel directly.

    torch.optim's step() wraps the kernel in Python (hooks, profiler records, state gathered and grouped by
    device on every call), which for LeNet-5's 10 small tensors costs several times the kernel (docs/speed.md).
    Here the first step is torch's own (it creates the state); later steps make the call torch makes, with
    the same arguments, so the numbers are torch's bit for bit (tests/test_optim.py). Anything off the
    plain path (a closure, hooks, a parameter without a gradient, a tensor learning rate, a state loaded
    or a group added) goes through torch's step, and the plan is rebuilt after it.
    """
    _plan = None   # per param group: (group, params, state tensors); None: torch's step runs next

    def add_param_group(self, param_group) -> None:
        self._plan = None
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict) -> None:
        self._plan = None
        super().load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self, closure=None):
        lean = closure is None and switches.ON["lean_steps"] and not _has_hooks(self)
        if lean and self._plan is not None and _run(self._plan):
            return None
        loss = super().step(closure)
        # the plan is built only for a step that could take it: with hooks every step is torch's anyway
        self._plan = _lean_plan(self) if lean and _lean_agrees() else None
        return loss
    # torch wraps a subclass's step for its hooks and profiler record on first use; here super().step, which
    # torch has wrapped, runs the hooks, and the lean path runs only where there are none
    step.hooked = True


def _has_hooks(optimizer) -> bool:
    from torch.optim import optimizer as torch_optimizer   # torch's global step hooks live there
    return bool(optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks)


def _lean_plan(optimizer):
    """Per param group: (kernel call, group, params, state), or None where a group is off the plain path
    (state missing, amsgrad, not float32 on CPU). state: {key: a tensor per parameter}, the keys the
    kernel takes; Adam's and Adagrad's step counters move into one vector ("steps", one add per step),
    each parameter keeping a view of its own element, so that torch's step still counts each alone."""
    adam = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
    call, keys = ((_adam, ("exp_avg", "exp_avg_sq")) if adam else
                  (_adagrad, ("sum",)) if isinstance(optimizer, torch.optim.Adagrad) else
                  (_sgd, ("momentum_buffer",)))
    plan = []
    for group in optimizer.param_groups:
        params = group["params"]
        if not all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params) or group.get("amsgrad"):
            return None
        group_keys = () if call is _sgd and group["momentum"] == 0 else keys
        states = [optimizer.state.get(p, {}) for p in params]
        if not all(key in s for s in states for key in group_keys):
            return None
        state = {key: [s[key] for s in states] for key in group_keys}
        if call is not _sgd:
            steps = torch.stack([s["step"] for s in states])
            for i, s in enumerate(states):
                s["step"] = steps[i]
            state["steps"], state["step_list"] = steps, [s["step"] for s in states]
        if adam:
            state["decoupled"] = group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW))
        plan.append((call, group, params, state))
    return plan


def _run(plan) -> bool:
    """One lean step; False (and nothing done) where torch's step has to run: a parameter without a
    gradient, a learning rate that is not a float, SGD's momentum switched on or off."""
    grads = [[p.grad for p in params] for _, _, params, _ in plan]
    if any(g is None for gs in grads for g in gs) or any(
            type(group["lr"]) is not float or (call is _sgd and (group["momentum"] != 0) != bool(state))
            for call, group, _, state in plan):
        return False
    with torch.no_grad():
        for (call, group, params, state), group_grads in zip(plan, grads):
            call(group, params, group_grads, state)
    return True


def _sgd(group, params, grads, state) -> None:
    torch._fused_sgd_(params, grads, state.get("momentum_buffer", []), weight_decay=group["weight_decay"],
                      momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                      nesterov=group["nesterov"], maximize=group["maximize"], is_first_step=False,
                      grad_scale=None, found_inf=None)


def _adam(group, params, grads, state) -> None:
    state["steps"].add_(1)
    kernel = torch._fused_adamw_ if state["decoupled"] else torch._fused_adam_
    beta1, beta2 = group["betas"]
    kernel(params, grads, state["exp_avg"], state["exp_avg_sq"], [], state["step_list"], amsgrad=False,
           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
           maximize=group["maximize"], grad_scale=None, found_inf=None)


def _adagrad(group, params, grads, state) -> None:
    state["steps"].add_(1)
    torch._fused_adagrad_(params, grads, state["sum"], state["step_list"], lr=group["lr"],
                          lr_decay=group["lr_decay"], weight_decay=group["weight_decay"], eps=group["eps"],
                          maximize=group["maximize"], grad_scale=None, found_inf=None)


def _lean(cls):
    return type(cls.__name__, (_LeanStep, cls), {"__doc__": cls.__doc__, "__module__": cls.__module__})


_LEAN = {cls: _lean(cls) for cls in {torch.optim.SGD, torch.optim.Adagrad, torch.optim.Adam, torch.optim.AdamW}}


# the kinds the self-check steps: (torch class, keyword arguments)
_CHECKED = ((torch.optim.SGD, {"momentum": 0.9}), (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
            (torch.optim.SGD, {}), (torch.optim.Adam, {}), (torch.optim.AdamW, {}), (torch.optim.Adagrad, {}))


@functools.cache
def _lean_agrees() -> bool:
    """Once per process: three lean steps give torch's own fused numbers bit for bit, for every kind (were a
    torch release to change its fused kernels' arguments, torch's own step would run throughout)."""
    g = torch.Generator().manual_seed(0)
    try:
        for cls, kwargs in _CHECKED:
            start = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]
            grads = [[torch.randn(p.shape, generator=g) for p in start] for _ in range(3)]   # not the global RNG
            ends = []
            for lean in (False, True):
                params = [p.clone().requires_grad_() for p in start]
                opt = (_LEAN[cls] if lean else cls)(params, lr=0.1, weight_decay=0.01, **kwargs, fused=True)
                for number, step_grads in enumerate(grads):
                    for p, grad in zip(params, step_grads):
                        p.grad = grad
                    if lean and number > 0:
                        if not _run(plan):
                            return False
                    else:
                        cls.step(opt)
                        plan = _lean_plan(opt)
                ends.append(params)
            if not all(torch.equal(a, b) for a, b in zip(*ends)):
                return False
        return True
    except (RuntimeError, TypeError, AttributeError, KeyError):
        return False


def lean_steps(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """optimizer, its steps made lean (_LeanStep) where it is one of torch's fused SGD, Adagrad, Adam or AdamW;
    any other optimizer unchanged. The same numbers as its own steps bit for bit (its next step is torch's own)."""
    lean = _LEAN.get(type(optimizer))
    if lean is not None and optimizer.defaults.get("fused"):
        optimizer.__class__ = lean    # the same object and state; only step and zero_grad change
    return optimizer


def is_lean(optimizer: torch.optim.Optimizer) -> bool:
    """Whether lean_steps made optimizer's steps lean (bench/tricks.py: whether switching them off changes it)."""
    return isinstance(optimizer, _LeanStep)
